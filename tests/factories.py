"""Factories for the rows tests need: users of each kind, API clients, chains and runs. Rows
are made through the services where the project makes them so (chains, runs)."""
import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from chains import services
from chains.presets import Preset, StepSpec


class UserFactory(factory.django.DjangoModelFactory):
    """A user who is not staff (`staff=True`, `superuser=True` for the others); the password
    is "pw-<username>"."""

    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")

    class Params:
        staff = factory.Trait(is_staff=True)
        superuser = factory.Trait(is_staff=True, is_superuser=True)

    @factory.post_generation
    def password(self, create: bool, extracted, **kwargs) -> None:
        self.set_password(extracted or f"pw-{self.username}")
        if create:
            self.save(update_fields=["password"])


def make_user(username: str, *, staff: bool = False, superuser: bool = False,
              view_only: bool = False):
    """`view_only`: staff with every view_* permission and nothing else."""
    user = UserFactory(username=username, staff=staff or view_only, superuser=superuser)
    if view_only:
        user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def make_chain(name: str = "chain", *, user=None, steps: list[StepSpec] | None = None,
               **fields):
    """A chain saved by the service, one math.add step unless told otherwise."""
    return services.chain_save(name=name, user=user, **fields,
                               steps=steps or [StepSpec("math.add", {"numbers": [1]}, 0)])


def make_run(*specs: StepSpec, user=None, inputs=0, **kwargs):
    """A run of `specs` started by the service (not published: no broker is asked)."""
    return services.run_create(preset=Preset(specs=list(specs), inputs=inputs),
                               trigger="api", user=user, **kwargs)
