"""Thread epochs: a new one for threads whose history clients can no longer trust."""

import logging
from dataclasses import dataclass

from django.db import transaction

from chat.models import Thread, new_epoch

logger = logging.getLogger(__name__)
BATCH = 1000


@dataclass(frozen=True)
class EpochChange:
    """One thread's epoch, before and after a bump."""

    thread_id: str
    old: str
    new: str


def thread_epochs_bump(
    *, thread_id: str | None = None, dry_run: bool = False
) -> list[EpochChange]:
    """Give one thread (or every thread) a new epoch; with dry_run, change nothing.

    Raises Thread.DoesNotExist when `thread_id` names no thread.
    """
    threads = Thread.objects.order_by("pk").only("pk", "epoch")
    if thread_id is not None:
        threads = threads.filter(pk=thread_id)
    changes: list[EpochChange] = []
    with transaction.atomic():
        # Locked: a thread created or bumped meanwhile keeps one consistent epoch.
        rows = list(threads.select_for_update()) if not dry_run else list(threads)
        if thread_id is not None and not rows:
            raise Thread.DoesNotExist(f"no thread {thread_id!r}")
        for thread in rows:
            changes.append(EpochChange(thread.pk, thread.epoch, new_epoch()))
            thread.epoch = changes[-1].new
        if not dry_run:
            Thread.objects.bulk_update(rows, ["epoch"], batch_size=BATCH)
    if not dry_run:
        logger.warning(
            "thread_epochs_bumped threads=%d",
            len(changes),
            extra={"event": "thread_epochs_bumped"},
        )
    return changes
