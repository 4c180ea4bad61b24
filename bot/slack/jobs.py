"""What the ``/finetune`` requests and the job and model buttons do, once acknowledged: each a
function ``(bot, where, ...)`` run on the work pool (:meth:`bot.slack.context.SlackBot.submit`),
answering in the channel or privately. Who may do what is checked here (the owner or an admin
cancels; the owner accepts a cost) and in the engine (base models, the per-person job limit)."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError

from bot.slack import blocks
from bot.slack.context import SlackBot, Where
from bot.slack.parse import FinetuneRequest
from engine import Job, JobNotFound, NotFound

log = logging.getLogger("ftbot.slack")


def resolve_dataset(bot: SlackBot, where: Where, ref: str | None) -> str:
    """A dataset hash from what the user typed: nothing (the channel's latest usable upload),
    a Slack file id, or a hash (or its first characters)."""
    if ref is None:
        record = bot.engine.latest_dataset(where.team, where.channel)
        if record is None:
            raise NotFound(
                "There is no usable dataset in this channel yet.",
                hint="Upload a .jsonl file of chat examples here first; I will check it and reply.",
            )
        return str(record.hash)
    known = bot.engine.dataset_by_source(ref, team=where.team)
    if known is not None:
        return str(known.hash)
    return str(bot.engine.dataset(ref, team=where.team).hash)


def start_job(bot: SlackBot, where: Where, request: FinetuneRequest) -> None:
    """Submit the job and post its card (privately say so when the bot cannot post here)."""
    dataset_hash = resolve_dataset(bot, where, request.dataset)
    eval_hash = resolve_dataset(bot, where, request.eval_dataset) if request.eval_dataset else None
    # The engine holds who may do what (the base models people may choose, the limit of
    # unfinished jobs per person); admins may choose any base model and have no limit.
    job = bot.engine.submit(
        dataset_hash,
        options=dict(request.options),
        owner=where.user,
        team=where.team,
        channel=where.channel,
        eval_dataset_hash=eval_hash,
        is_admin=bot.settings.is_admin(where.user),
    )
    if bot.cards.ensure(job) is None:
        bot.private(
            where,
            blocks.error(
                f"Job {job.id} is queued, but I cannot post in this channel: invite me with /invite, "
                f"then `/finetune status {job.id}`."
            ),
        )


def cancel_job(bot: SlackBot, where: Where, job_id: str) -> None:
    """Cancel ``job_id`` for its owner or an admin, and update its card."""
    try:
        job: Job = bot.engine.job(job_id, team=where.team)
    except NotFound:
        raise JobNotFound(
            f"There is no job {job_id} in this workspace.",
            hint="`/finetune list` shows the jobs in this channel.",
        ) from None
    is_admin = bot.settings.is_admin(where.user)
    if job.owner != where.user and not is_admin:
        bot.private(
            where,
            blocks.error(f"Only the person who started {job.id} (<@{job.owner}>) or an admin can cancel it."),
        )
        return
    if job.is_final:
        bot.private(where, blocks.error(f"Job {job.id} has already ended ({job.state})."))
        return
    job = bot.engine.cancel(job.id, user=where.user, is_admin=is_admin, team=where.team)
    bot.cards.update(job)


def confirm_job(bot: SlackBot, where: Where, job_id: str) -> None:
    """The owner accepts an OpenAI job's estimated cost; said in the job's thread."""
    job: Job = bot.engine.job(job_id, team=where.team)
    if job.owner != where.user:  # spending money is the owner's call, not an admin's
        bot.private(where, blocks.error(f"Only the person who started {job.id} can accept its cost."))
        return
    bot.engine.confirm(job.id, user=where.user, team=where.team)
    bot.cards.post_in_thread(job, blocks.notice(f"<@{where.user}> accepted the cost; the job can start."))


def status(bot: SlackBot, where: Where, job_id: str | None) -> None:
    """Privately, the card of ``job_id`` (None: the channel's latest job)."""
    if job_id:
        job = bot.engine.job(job_id, team=where.team)
    else:
        jobs = bot.engine.jobs(team=where.team, channel=where.channel, limit=1)
        if not jobs:
            bot.private(where, blocks.jobs_list([]))
            return
        job = jobs[0]
    position = bot.engine.queue_position(job.id) if not job.is_final else None
    bot.private(where, blocks.job_card(job, queue_position=position))


def list_jobs(bot: SlackBot, where: Where) -> None:
    """Privately, the channel's latest jobs."""
    bot.private(where, blocks.jobs_list(bot.engine.jobs(team=where.team, channel=where.channel, limit=20)))


def list_models(bot: SlackBot, where: Where) -> None:
    """``/finetune models``: privately, the workspace's models with the current one marked."""
    choice = bot.engine.model_choice(where.team, where.channel)
    message = blocks.model_list(
        bot.engine.models(where.team),
        choice,
        base_model=bot.engine.settings.base_model,
        channel=where.channel,
    )
    bot.private(where, message)


def use_model(bot: SlackBot, where: Where, choice: str) -> None:
    """``/finetune use`` or a *Use* button: change the channel's current model and say so in
    the channel, visibly, so the team sees who switched it. A bad id is the engine's
    ModelNotFound (private, with how to list the models)."""
    before = bot.engine.model_choice(where.team, where.channel)
    after = bot.engine.use_model(where.team, where.channel, choice, user=where.user)
    message = blocks.model_switched(
        after, user=where.user, previous=before, base_model=bot.engine.settings.base_model
    )
    try:
        bot.post(where, message)
    except SlackApiError as exc:
        log.info("announcing a model change failed: %s", exc.response.get("error"))
        bot.private(
            where,
            blocks.error(
                "Done: this channel's model is changed, but I cannot post here to tell the team. "
                "Invite me with /invite @ftbot."
            ),
        )
