"""Schedules: validation, fire times across daylight saving, time slots, the beat entry kept in
step, one run per slot enforced by the database."""
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django_celery_beat.models import PeriodicTask

from chains import services
from chains.models import ChainSchedule, Run, RunTrigger
from chains.presets import StepSpec
from chains.schedules import next_fire_times, schedule_errors, slot_for
from tests.helpers import unchanged

BERLIN = ZoneInfo("Europe/Berlin")


def cron(**fields):
    base = {"kind": "crontab", "minute": "0", "hour": "*", "day_of_month": "*",
            "month_of_year": "*", "day_of_week": "*", "timezone": "Europe/Berlin"}
    return SimpleNamespace(**{**base, **fields})


def test_daily_crontab_keeps_local_time_across_spring_forward():
    schedule = cron(minute="0", hour="9")
    after = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)
    times = next_fire_times(schedule, after=after)
    assert [t.strftime("%m-%d %H:%M %Z") for t in times] == [
        "03-28 09:00 CET", "03-29 09:00 CEST", "03-30 09:00 CEST", "03-31 09:00 CEST",
        "04-01 09:00 CEST"]
    assert [t.astimezone(UTC).hour for t in times] == [8, 7, 7, 7, 7]


def test_a_time_the_clocks_skip_does_not_fire_and_a_repeated_one_fires_once():
    spring = next_fire_times(cron(minute="30", hour="2"), after=datetime(2026, 3, 27, tzinfo=UTC),
                             count=3)
    assert [t.strftime("%m-%d %H:%M") for t in spring] == ["03-27 02:30", "03-28 02:30",
                                                           "03-30 02:30"]  # no 03-29
    autumn = next_fire_times(cron(minute="30", hour="2"), after=datetime(2026, 10, 24, 12,
                                                                         tzinfo=UTC), count=2)
    assert [t.strftime("%m-%d %H:%M %Z") for t in autumn] == ["10-25 02:30 CEST",
                                                              "10-26 02:30 CET"]


def test_hourly_crontab_over_the_autumn_change_in_utc():
    times = next_fire_times(cron(minute="15"), after=datetime(2026, 10, 25, 0, 0, tzinfo=UTC),
                            count=4)
    # 02:15 CEST (00:15 UTC), then 02:15 CET is skipped as the second occurrence, 03:15 CET.
    assert [t.astimezone(UTC).strftime("%H:%M") for t in times] == ["00:15", "02:15", "03:15",
                                                                    "04:15"]


def test_interval_and_once_fire_times():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    every = SimpleNamespace(kind="interval", every_seconds=60, timezone="UTC")
    times = next_fire_times(every, after=start + timedelta(seconds=90), last_run_at=start)
    assert times[0] == start + timedelta(seconds=120) and times[1] - times[0] == timedelta(
        seconds=60)
    once = SimpleNamespace(kind="once", run_at=start, timezone="Europe/Berlin")
    assert next_fire_times(once, after=start - timedelta(days=1)) == [start.astimezone(BERLIN)]
    assert next_fire_times(once, after=start) == []


def test_slots():
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    every = SimpleNamespace(kind="interval", every_seconds=10, created_at=anchor)
    # Two firings a little apart (two beats, or jitter) name the same slot.
    assert slot_for(every, anchor + timedelta(seconds=29.8)) == anchor + timedelta(seconds=30)
    assert slot_for(every, anchor + timedelta(seconds=31)) == anchor + timedelta(seconds=30)
    assert slot_for(cron(), anchor + timedelta(minutes=5, seconds=7)) == anchor + timedelta(
        minutes=5)


@pytest.mark.parametrize(("fields", "field"), [
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"minute": "61"}, "minute"),
    ({"day_of_week": "funday"}, "day_of_week"),
])
def test_schedule_errors_name_the_field(fields, field):
    assert field in schedule_errors(cron(**fields))


@pytest.fixture
def chain(db):
    return services.chain_save(name="nightly", steps=[StepSpec("math.add", {"numbers": [1]}, 0)])


@pytest.mark.django_db
def test_the_beat_entry_follows_the_schedule(chain):
    schedule = ChainSchedule.objects.create(chain=chain, kind="interval", every_seconds=30)
    task = PeriodicTask.objects.get(chain_schedule=schedule)
    assert task.task == "chains.run_scheduled"
    assert task.kwargs == f'{{"schedule_id": {schedule.id}}}'
    assert task.interval.every == 30 and task.enabled
    schedule.kind, schedule.minute, schedule.hour = "crontab", "5", "3"
    schedule.timezone = "Europe/Berlin"
    schedule.enabled = False
    schedule.save()
    task.refresh_from_db()
    assert task.interval is None and str(task.crontab.timezone) == "Europe/Berlin"
    assert (task.crontab.minute, task.crontab.hour, task.enabled) == ("5", "3", False)
    schedule.delete()
    assert not PeriodicTask.objects.filter(id=task.id).exists()


@pytest.mark.django_db
def test_one_run_per_slot_whatever_fires(chain):
    schedule = ChainSchedule.objects.create(chain=chain, kind="crontab", minute="*",
                                            inputs=[5])
    now = datetime(2026, 5, 1, 12, 0, 10, tzinfo=UTC)
    first = services.run_start_scheduled(schedule_id=schedule.id, now=now)
    again = services.run_start_scheduled(schedule_id=schedule.id, now=now + timedelta(seconds=20))
    later = services.run_start_scheduled(schedule_id=schedule.id, now=now + timedelta(minutes=1))
    assert first is not None and again is None and later is not None
    runs = Run.objects.order_by("scheduled_for")
    assert [(r.scheduled_for.minute, r.trigger, r.inputs) for r in runs] == [
        (0, RunTrigger.SCHEDULE, [5]), (1, RunTrigger.SCHEDULE, [5])]


@pytest.mark.django_db
def test_a_disabled_schedule_or_chain_starts_nothing(chain):
    schedule = ChainSchedule.objects.create(chain=chain, kind="interval", every_seconds=5,
                                            enabled=False)
    assert services.run_start_scheduled(schedule_id=schedule.id) is None
    schedule.enabled = True
    schedule.save()
    chain.enabled = False
    chain.save()
    assert services.run_start_scheduled(schedule_id=schedule.id) is None
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_schedules_api(api, user):
    chain = services.chain_save(name="mine", steps=[StepSpec("math.add", {"numbers": [1]}, 0)],
                                user=user)
    with unchanged():
        bad = api.post("/api/schedules/", {"chain": chain.id, "kind": "crontab",
                                           "minute": "99", "timezone": "Nowhere/City"},
                       format="json")
    assert bad.status_code == 400 and {"minute", "timezone"} <= set(bad.json())
    made = api.post("/api/schedules/", {"chain": chain.id, "kind": "crontab", "minute": "0",
                                        "hour": "9", "timezone": "Europe/Berlin"}, format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert len(body["next_fire_times"]) == 5 and body["next_fire_times"][0].endswith(
        ("+01:00", "+02:00"))
    assert PeriodicTask.objects.filter(chain_schedule__id=body["id"]).exists()


@pytest.mark.django_db
def test_schedule_inline_shows_fire_times_and_beat_admin_is_for_superusers(client, chain):
    from django.contrib.auth.models import Permission

    from tests.factories import make_user

    ChainSchedule.objects.create(chain=chain, kind="crontab", minute="0", hour="9",
                                 timezone="Europe/Berlin")
    root = make_user("root2", superuser=True)
    client.force_login(root)
    page = client.get(reverse("admin:chains_chain_change", args=[chain.pk])).content.decode()
    assert "09:00:00 CE" in page  # next fire times in the schedule's timezone
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 200
    staff = make_user("staff2", staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="django_celery_beat"))
    client.force_login(staff)
    assert client.get("/admin/django_celery_beat/periodictask/").status_code == 403
    assert client.get("/admin/django_celery_beat/periodictask/add/").status_code == 403


@pytest.mark.flow
@pytest.mark.django_db(transaction=True)
def test_real_beats_start_one_run_per_slot_and_skip_disabled_schedules(start_worker, start_beat,
                                                                        chain):
    import time

    from tests.helpers import wait_for_run

    on = ChainSchedule.objects.create(chain=chain, kind="interval", every_seconds=2)
    off = ChainSchedule.objects.create(chain=chain, kind="interval", every_seconds=1,
                                       enabled=False)
    start_worker()
    start_beat()
    start_beat()  # a second beat by mistake
    started = time.monotonic()
    deadline = started + 60
    while Run.objects.filter(schedule=on).count() < 4:
        assert time.monotonic() < deadline, "the schedule did not fire"
        time.sleep(0.2)
    on.enabled = False
    on.save()
    elapsed = time.monotonic() - started
    runs = list(Run.objects.filter(schedule=on).order_by("scheduled_for"))
    slots = [r.scheduled_for for r in runs]
    assert len(set(slots)) == len(slots)
    assert all(b - a >= timedelta(seconds=2) for a, b in zip(slots, slots[1:], strict=False))
    assert len(runs) <= elapsed / 2 + 3  # one per slot, not one per beat
    assert not Run.objects.filter(schedule=off).exists()
    for run in runs:
        assert wait_for_run(run.id).status == "COMPLETED"
