"""kombu's Redis transport, used for redis:// and rediss:// brokers (CELERY_BROKER_TRANSPORT),
with two changes for a worker that loses its Redis connection while it holds messages. kombu
closes the channel by giving its reserved messages back to the broker it has just lost, and
once it is connected again it acknowledges the messages of tasks that ran meanwhile on the
closed channel; both raise an error that stops the worker ("Unrecoverable error:
AttributeError ... 'hostname'" or "... 'client'"), and under `make run` every process with it.
Here the give-back fails quietly and such an acknowledgement only forgets the message: Redis'
unacked set keeps both kinds, and its visibility timeout restores them (a step that had
finished returns its stored result), or, when Redis came back empty, the reconciler publishes
the lost ones again."""
import logging

from kombu.transport import redis, virtual

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    def restore_unacked(self, client=None):
        try:
            return super().restore_unacked(client)
        except Exception as exc:  # the broker is away: it cannot be given anything back
            logger.warning("could not give %d reserved message(s) back to the broker (%s): "
                           "Redis restores them after the visibility timeout",
                           len(self._delivered), exc)
            return None

    def ack(self, delivery_tag):
        if self.channel.connection is None:  # delivered on a connection since lost
            return virtual.QoS.ack(self, delivery_tag)
        return super().ack(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if self.channel.connection is None:
            return virtual.QoS.ack(self, delivery_tag)
        return super().reject(delivery_tag, requeue)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
