"""The channel's current model: the promotion rule, a user's choice (a model, ``base``, ``auto``),
and every surface that shows or changes it (Engine, Slack, console, ``ftbot models``).

All real: a real Engine on SQLite under tmp_path, the real pipeline's ``finish_evaluation`` for
promotions (no training: the answers are given), the Bolt app driven by signed requests against
the fake Slack Web API, the fake OpenAI server for answers that need no torch.
"""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bot.cli import main as cli
from bot.console import Console
from bot.slack import blocks
from bot.slack.parse import ModelsRequest, ParseError, UseRequest, parse_finetune
from engine import (
    DefaultChoice,
    Engine,
    Job,
    JobState,
    ModelNotFound,
    ModelRecord,
    Settings,
    Store,
    UsageError,
)
from engine.jobs import new_job_id
from engine.pipeline import JobContext, finish_evaluation
from engine.store import PROMOTION_RULE
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.slack_api import FakeSlack
from tests.test_slack_app import OTHER, OWNER, STRANGER, Harness, make_harness

TEAM, CHANNEL = "T0001", "C0CHAN01"  # the fake Slack's workspace and channel
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _model(
    model_id: str, *, team: str = TEAM, channel: str = CHANNEL, age_days: int = 0, **kw: Any
) -> ModelRecord:
    values: dict[str, Any] = {
        "id": model_id,
        "kind": "local_adapter",
        "base_model": "builtin:tiny",
        "job_id": None,
        "team": team,
        "channel": channel,
        "created_at": T0 + timedelta(days=age_days),
        "path": Path("/nowhere") / model_id,
        "verdict": "improved",
    }
    values.update(kw)
    return ModelRecord(**values)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    with Engine(settings) as eng:
        yield eng


def _evaluate(
    engine: Engine,
    *,
    references: list[str],
    zero: list[str],
    few: list[str],
    tuned: list[str],
    task: str,
    team: str = TEAM,
    channel: str = CHANNEL,
    before: Callable[[JobContext], None] | None = None,
) -> Job:
    """A job that reached ``evaluating``, finished by the real ``finish_evaluation`` with the given
    answers (no training): the promotion rule runs as after training. ``before`` runs on the job's
    context first (e.g. to leave a loss chart in its run directory, as training does)."""
    now = datetime.now(UTC)
    job = Job(
        id=new_job_id(),
        backend="local",
        base_model="builtin:tiny",
        dataset_hash="ab" * 32,
        created_at=now,
        updated_at=now,
        owner=OWNER,
        team=team,
        channel=channel,
    )
    engine.store.add_job(job)
    for state in (JobState.VALIDATING, JobState.BASELINE, JobState.TRAINING, JobState.EVALUATING):
        engine.store.transition(job.id, state)
    base = {
        "references": references,
        "prompts": [[{"role": "user", "content": f"question {i}?"}] for i in range(len(references))],
        "zero_shot": zero,
        "few_shot": few,
        "task": task,
        "k": 2,
        "max_new_tokens": 4,
    }
    ctx = JobContext(store=engine.store, settings=engine.settings, job_id=job.id)
    if before is not None:
        before(ctx)
    record = _model(job.id, team=team, channel=channel, job_id=job.id, created_at=now, verdict=None)
    done = finish_evaluation(ctx, base, tuned, model=record, metric=None, seed=0)
    assert done.state is JobState.SUCCEEDED and done.model_id == job.id
    return done


def _promote_by_evaluation(
    engine: Engine, *, team: str = TEAM, channel: str = CHANNEL, worse: bool = False
) -> Job:
    """A job finished with answers that beat (or, ``worse``, lose to) the baseline."""
    references = ["yes", "no"] * 15
    return _evaluate(
        engine,
        references=references,
        zero=["no", "yes"] * 15 if not worse else references,
        few=["no", "yes"] * 15 if not worse else references,
        tuned=references if not worse else ["maybe"] * len(references),
        task="label",
        team=team,
        channel=channel,
    )


def _promotion_alert(engine: Engine, job_id: str) -> dict[str, Any]:
    (event,) = [e for e in engine.events(job_id) if e.kind == "alert" and e.data.get("code") == "promotion"]
    return {"message": event.message, **event.data}


# ------------------------------------------------------------------ the engine


def test_use_a_model_then_base_then_auto(engine: Engine) -> None:
    engine.store.add_model(_model("ft-a"))
    engine.store.add_model(_model("ft-b", channel="C0OTHER1", verdict="worse", age_days=1))
    start = engine.model_choice(TEAM, CHANNEL)
    assert (start.mode, start.model, start.by_user, start.chooser) == ("auto", None, False, None)

    engine.store.promote(TEAM, CHANNEL, "ft-a")
    rule = engine.model_choice(TEAM, CHANNEL)
    assert rule.model_id == "ft-a" and rule.set_by == PROMOTION_RULE and not rule.by_user
    assert rule.chooser is None and engine.current_model(TEAM, CHANNEL).id == "ft-a"

    # Any of the workspace's models, from another channel and "worse" too.
    chosen = engine.use_model(TEAM, CHANNEL, "ft-b", user=OWNER)
    assert isinstance(chosen, DefaultChoice)
    assert (chosen.mode, chosen.model_id, chosen.chooser, chosen.by_user) == ("model", "ft-b", OWNER, True)
    assert chosen.set_at is not None and chosen.promoted.id == "ft-a"
    assert engine.current_model(TEAM, CHANNEL).id == "ft-b"
    assert engine.current_model(TEAM, "C0OTHER1") is None  # only this channel changed

    base = engine.use_model(TEAM, CHANNEL, " BASE ", user=OTHER)
    assert (base.mode, base.model, base.chooser, base.by_user) == ("base", None, OTHER, True)
    assert engine.current_model(TEAM, CHANNEL) is None

    auto = engine.use_model(TEAM, CHANNEL, "auto", user=OWNER)
    assert (auto.mode, auto.model_id, auto.by_user, auto.chooser) == ("auto", "ft-a", False, OWNER)
    assert engine.current_model(TEAM, CHANNEL).id == "ft-a"

    # The old entry point still works: a user's choice, None goes back to the rule.
    engine.set_default_model(TEAM, CHANNEL, "ft-b", user=OWNER)
    assert engine.model_choice(TEAM, CHANNEL).mode == "model"
    engine.set_default_model(TEAM, CHANNEL, None, user=OWNER)
    assert engine.model_choice(TEAM, CHANNEL).model_id == "ft-a"


def test_auto_without_any_promotion_means_the_base_model(engine: Engine) -> None:
    engine.store.add_model(_model("ft-a"))
    engine.use_model(TEAM, CHANNEL, "ft-a", user=OWNER)
    auto = engine.use_model(TEAM, CHANNEL, "auto", user=OWNER)
    assert auto.mode == "auto" and auto.model is None and engine.current_model(TEAM, CHANNEL) is None


def test_unknown_and_foreign_models_are_refused_with_how_to_list_them(engine: Engine) -> None:
    engine.store.add_model(_model("ft-a"))
    engine.store.add_model(_model("ft-theirs", team="T0002"))
    engine.use_model(TEAM, CHANNEL, "ft-a", user=OWNER)
    for bad in ("ft-nope", "ft-theirs"):
        with pytest.raises(ModelNotFound) as caught:
            engine.use_model(TEAM, CHANNEL, bad, user=OWNER)
        text = str(caught.value)
        assert bad in text and "/finetune models" in text and "ftbot models" in text
        assert "`base`" in text and "`auto`" in text
    with pytest.raises(UsageError, match="a model id, `base` or `auto`"):
        engine.use_model(TEAM, CHANNEL, "  ", user=OWNER)
    # Nothing changed, and the other workspace cannot pick our model either.
    assert engine.current_model(TEAM, CHANNEL).id == "ft-a"
    with pytest.raises(ModelNotFound):
        engine.use_model("T0002", CHANNEL, "ft-a", user=OWNER)
    assert [a.action for a in engine.store.audit_log()] == ["model.use"]


def test_every_change_is_audited(engine: Engine) -> None:
    engine.store.add_model(_model("ft-a"))
    engine.use_model(TEAM, CHANNEL, "ft-a", user=OWNER)
    engine.use_model(TEAM, CHANNEL, "base", user=OTHER)
    engine.use_model(TEAM, CHANNEL, "auto", user=OWNER)
    done = _promote_by_evaluation(engine)
    log = engine.store.audit_log()
    uses = [(a.actor, a.subject, a.details["mode"]) for a in log if a.action == "model.use"]
    assert uses == [(OWNER, "auto", "auto"), (OTHER, "base", "base"), (OWNER, "ft-a", "model")]
    base_change = next(a for a in log if a.subject == "base")
    assert base_change.details["team"] == TEAM and base_change.details["channel"] == CHANNEL
    assert base_change.details["previous"] == {"mode": "model", "model": "ft-a", "set_by": OWNER}
    (promotion,) = [a for a in log if a.action == "model.promote"]
    assert promotion.actor == PROMOTION_RULE and promotion.subject == done.model_id
    assert promotion.details["became_current"] is True


def test_promotion_does_not_replace_a_users_choice_and_says_so(engine: Engine) -> None:
    first = _promote_by_evaluation(engine)
    assert first.result["promoted"] is True and first.result["kept_choice"] is None
    assert "is now this channel's default model" in _promotion_alert(engine, first.id)["message"]
    assert engine.current_model(TEAM, CHANNEL).id == first.model_id

    chosen = engine.use_model(TEAM, CHANNEL, first.model_id, user=OWNER)
    second = _promote_by_evaluation(engine)
    assert engine.current_model(TEAM, CHANNEL).id == first.model_id  # the user's choice stands
    assert engine.model(second.model_id, team=TEAM).verdict == "improved"  # registered all the same
    assert second.result["promoted"] is False
    assert second.result["kept_choice"]["mode"] == "model" and second.result["kept_choice"]["set_by"] == OWNER
    alert = _promotion_alert(engine, second.id)
    assert alert["promoted"] is False and alert["model_id"] == second.model_id
    message = alert["message"]
    assert "NOT made this channel's current model" in message
    assert f"<@{OWNER}> chose model {first.model_id} on {chosen.set_at:%Y-%m-%d %H:%M} UTC" in message
    assert (
        f"`/finetune use {second.model_id}`" in message and f"ftbot models --use {second.model_id}" in message
    )
    assert engine.model_choice(TEAM, CHANNEL).promoted.id == second.model_id

    # The base model chosen by a user: the same, and the message names the base model.
    engine.use_model(TEAM, CHANNEL, "base", user=OTHER)
    third = _promote_by_evaluation(engine)
    assert engine.current_model(TEAM, CHANNEL) is None
    assert f"<@{OTHER}> chose the base model on" in _promotion_alert(engine, third.id)["message"]
    assert third.result["kept_choice"]["mode"] == "base"

    # Back to auto: the latest promoted fine-tune is current again, and later ones replace it.
    assert engine.use_model(TEAM, CHANNEL, "auto", user=OWNER).model_id == third.model_id
    fourth = _promote_by_evaluation(engine)
    assert fourth.result["promoted"] is True and engine.current_model(TEAM, CHANNEL).id == fourth.model_id
    # A worse model is never promoted, and does not become the rule's pick either.
    worse = _promote_by_evaluation(engine, worse=True)
    assert worse.result["promoted"] is False and worse.result["verdict"] == "worse"
    assert engine.model_choice(TEAM, CHANNEL).promoted.id == fourth.model_id
    # The other channel of the workspace was never touched.
    assert engine.model_choice(TEAM, "C0OTHER1").model is None


def test_a_fine_tune_that_learned_nothing_is_not_promoted_and_the_thread_says_why(engine: Engine) -> None:
    # JSON extraction where no model produces JSON: the verdict is "no significant difference",
    # which the old rule (verdict not worse) promoted.
    references = [
        json.dumps({"team": t, "urgent": i % 3 == 0}) for i, t in enumerate(["billing", "bug"] * 12)
    ]
    gibberish = ["I think this is about billing."] * len(references)

    def leave_a_loss_chart(ctx: JobContext) -> None:
        (ctx.dir / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # what training leaves behind

    done = _evaluate(
        engine,
        references=references,
        zero=gibberish,
        few=gibberish,
        tuned=["{not json"] * len(references),
        task="json",
        before=leave_a_loss_chart,
    )
    model_id = done.model_id
    assert done.result["verdict"] == "no_significant_difference"
    assert done.result["promoted"] is False and done.result["kept_choice"] is None
    reasons = done.result["promotion_reasons"]
    assert "0% of its answers were valid JSON, so it has not learned the format" in reasons
    alert = _promotion_alert(engine, done.id)
    assert alert["promoted"] is False and alert["reasons"] == reasons
    assert alert["message"].startswith(
        f"The fine-tuned model {model_id} was NOT made this channel's default: "
    )
    assert "0% of its answers were valid JSON" in alert["message"]
    assert alert["message"].endswith(f"You can still try it with model={model_id}.")
    assert done.result["promotion"] == alert["message"]
    # Not the channel's model, not the rule's pick, no promotion audited; registered all the same.
    assert engine.current_model(TEAM, CHANNEL) is None
    assert engine.model_choice(TEAM, CHANNEL).promoted is None
    assert not [a for a in engine.store.audit_log() if a.action == "model.promote"]
    assert engine.model(model_id, team=TEAM).verdict == "no_significant_difference"
    # The files in the run directory say the same.
    run = Path(done.result["report_path"]).parent
    report = json.loads((run / "report.json").read_text())
    assert report["promotion"]["promoted"] is False and report["promotion"]["reasons"] == reasons
    page = (run / "report.md").read_text()
    assert done.result["report_md"] == str(run / "report.md")
    assert f"# Fine-tuning report: job {done.id}" in page and "builtin:tiny" in page
    assert "NOT made this channel's default" in page and "valid JSON" in page
    assert "](loss.png)" in page  # training's chart is linked...
    assert ("](eval.png)" in page) is (run / "eval.png").is_file()  # ...and the evaluation chart when drawn


def test_a_fine_tune_that_answers_one_label_to_everything_is_not_promoted(engine: Engine) -> None:
    # It beats base models that answer gibberish ("improved"), but it only ever says "billing",
    # the most common label: no better than a constant answer.
    references = ["billing"] * 12 + ["bug"] * 8 + ["shipping"] * 6
    gibberish = ["zq"] * len(references)
    done = _evaluate(
        engine, references=references, zero=gibberish, few=gibberish, tuned=["billing"] * 26, task="label"
    )
    assert done.result["verdict"] == "improved" and done.result["promoted"] is False
    reasons = done.result["promotion_reasons"]
    assert any("same answer ('billing') to every example" in r for r in reasons)
    assert any("no better than always answering 'billing'" in r for r in reasons)
    assert engine.current_model(TEAM, CHANNEL) is None
    assert engine.model(done.model_id, team=TEAM).verdict == "improved"


def test_a_promoted_fine_tune_has_no_reasons_and_its_page_says_so(engine: Engine) -> None:
    done = _promote_by_evaluation(engine)
    assert done.result["promoted"] is True and done.result["promotion_reasons"] == []
    page = Path(done.result["report_md"]).read_text()
    assert "became this channel's default model" in page and "NOT made" not in page
    assert "](loss.png)" not in page  # no training chart in this run directory: no dead link


def test_the_choice_survives_a_restart(settings: Settings) -> None:
    with Engine(settings) as engine:
        engine.store.add_model(_model("ft-a"))
        engine.store.add_model(_model("ft-b", age_days=1))
        engine.store.promote(TEAM, CHANNEL, "ft-a")
        engine.use_model(TEAM, CHANNEL, "base", user=OWNER)
        engine.use_model(TEAM, "C0OTHER1", "ft-b", user=OTHER)
        before = engine.model_choice(TEAM, CHANNEL)
    with Engine(settings) as engine:
        after = engine.model_choice(TEAM, CHANNEL)
        assert after == before and after.mode == "base" and after.chooser == OWNER
        assert engine.current_model(TEAM, CHANNEL) is None
        assert engine.current_model(TEAM, "C0OTHER1").id == "ft-b"
        assert engine.use_model(TEAM, CHANNEL, "auto", user=OWNER).model_id == "ft-a"


def test_an_old_database_keeps_its_defaults_and_finds_the_promoted_model(tmp_path: Path) -> None:
    import sqlite_utils

    from engine.store import MIGRATIONS

    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="0004_default_choice")
    for model_id, promoted, day in (("ft-old1", True, 1), ("ft-old2", False, 2), ("ft-old3", True, 3)):
        old["jobs"].insert(
            {
                "id": model_id,
                "backend": "local",
                "state": "succeeded",
                "created_at": T0.isoformat(),
                "updated_at": T0.isoformat(),
                "result": json.dumps({"promoted": promoted}),
            }
        )
        old["models"].insert(
            {
                "id": model_id,
                "kind": "local_adapter",
                "base_model": "builtin:tiny",
                "job_id": model_id,
                "team": TEAM,
                "channel": CHANNEL,
                "created_at": (T0 + timedelta(days=day)).isoformat(),
            }
        )
    old["defaults"].insert_all(
        [  # CHANNEL: a user chose ft-old2 after ft-old3 was promoted; C2: the rule's pick
            {
                "team": TEAM,
                "channel": CHANNEL,
                "model_id": "ft-old2",
                "set_by": OWNER,
                "set_at": T0.isoformat(),
            },
            {
                "team": TEAM,
                "channel": "C2",
                "model_id": "ft-old1",
                "set_by": PROMOTION_RULE,
                "set_at": T0.isoformat(),
            },
        ]
    )
    old.close()
    with Store.open(path) as store:
        assert "0004_default_choice" in store.schema_migrations()
        user = store.default_choice(TEAM, CHANNEL)
        assert (user.mode, user.model_id, user.chooser, user.promoted.id) == (
            "model",
            "ft-old2",
            OWNER,
            "ft-old3",
        )
        rule = store.default_choice(TEAM, "C2")
        assert (rule.mode, rule.model_id, rule.promoted.id) == ("auto", "ft-old1", "ft-old1")
        assert store.set_default_choice(TEAM, CHANNEL, "auto", set_by=OWNER).model_id == "ft-old3"


# ------------------------------------------------------------------ /ask follows the choice


@pytest.fixture
def oa_engine(settings: Settings, fake: FakeOpenAI) -> Iterator[Engine]:
    """An engine whose models are OpenAI fine-tunes on the fake server: answers without torch."""
    oa_settings = replace(
        settings,
        openai_api_key="test",
        openai_base_url=fake.url + "/v1",
        # gpt-4o-mini retires on 2027-01-14: this is about the channel's choice, not the calendar.
        openai_retirements={"gpt-4o-mini": date(2099, 12, 31)},
    )
    fake.answer = lambda model, messages: f"answered by {model}"
    with Engine(oa_settings, openai_client=fake.client()) as eng:
        for name in ("oa-1", "oa-2"):
            remote = f"ft:gpt-4o-mini-2024-07-18:org-fake:ftbot:{name}"
            fake.add_model(remote)
            eng.store.add_model(
                _model(
                    name, kind="openai", base_model="gpt-4o-mini-2024-07-18", path=None, remote_name=remote
                )
            )
        yield eng


def test_ask_without_a_model_follows_the_channels_choice(oa_engine: Engine) -> None:
    oa_engine.store.promote(TEAM, CHANNEL, "oa-1")
    assert oa_engine.ask("hi", team=TEAM, channel=CHANNEL).text.endswith(":oa-1")
    # The OpenAI name works as an id too, and a user's choice is what /ask uses.
    oa_engine.use_model(TEAM, CHANNEL, "ft:gpt-4o-mini-2024-07-18:org-fake:ftbot:oa-2", user=OWNER)
    assert oa_engine.model_choice(TEAM, CHANNEL).model_id == "oa-2"
    assert oa_engine.ask("hi", team=TEAM, channel=CHANNEL).text.endswith(":oa-2")
    oa_engine.use_model(TEAM, CHANNEL, "base", user=OWNER)
    with pytest.raises(UsageError, match="current model is the base model alone"):
        oa_engine.ask("hi", team=TEAM, channel=CHANNEL, compare=True)
    oa_engine.use_model(TEAM, CHANNEL, "auto", user=OWNER)
    assert oa_engine.ask("hi", team=TEAM, channel=CHANNEL).text.endswith(":oa-1")


@pytest.mark.slow
def test_ask_honours_a_base_choice(engine: Engine) -> None:
    engine.store.add_model(_model("ft-gone", path=None))  # a promoted model that cannot answer
    engine.store.promote(TEAM, CHANNEL, "ft-gone")
    with pytest.raises(ModelNotFound, match="ft-gone"):
        engine.ask("hello", team=TEAM, channel=CHANNEL, max_tokens=4)  # proof: the channel's model is used
    engine.use_model(TEAM, CHANNEL, "base", user=OWNER)
    answer = engine.ask("hello", team=TEAM, channel=CHANNEL, max_tokens=4)
    assert answer.model == "base:builtin:tiny" and answer.adapter is None


# ------------------------------------------------------------------ Slack


def test_parse_models_and_use() -> None:
    assert parse_finetune("models") == ModelsRequest()
    assert parse_finetune("use ft-1a2b") == UseRequest("ft-1a2b")
    assert parse_finetune("USE base") == UseRequest("base")
    for bad in ("use", "use a b", "models extra"):
        with pytest.raises(ParseError) as caught:
            parse_finetune(bad)
        assert "/finetune" in str(caught.value)
    with pytest.raises(ParseError) as caught:
        parse_finetune("use")
    assert all(word in str(caught.value) for word in ("MODEL_ID", "`base`", "`auto`", "/finetune models"))


@pytest.fixture
def h(settings: Settings) -> Iterator[Harness]:
    with FakeSlack() as slack:
        harness = make_harness(settings, slack)
        harness.engine.store.add_model(_model("ft-a", verdict="improved"))
        harness.engine.store.add_model(_model("ft-b", verdict="worse", channel="C0OTHER1", age_days=1))
        harness.engine.store.add_model(_model("ft-theirs", team="T0002"))
        harness.engine.store.promote(TEAM, CHANNEL, "ft-a")
        yield harness
        harness.engine.close()


def _blocks(call: Any) -> str:
    return json.dumps(call.args.get("blocks") or [])


def test_slack_models_lists_the_workspaces_models_and_who_chose_the_current_one(h: Harness) -> None:
    assert h.command("/finetune", "models").status == 200
    (listing,) = h.slack.wait_for("chat.postEphemeral")
    text = _blocks(listing)
    assert listing.args["user"] == OWNER
    assert "`ft-a` *(current)*" in text and "`ft-b`" in text and "ft-theirs" not in text
    assert "chosen by the promotion rule" in text and "Fine-tuning made it worse" in text
    assert "local_adapter" in text and "created 2026-11-01 09:00 UTC" in text and "builtin:tiny" in text
    assert "from <#C0OTHER1>" in text
    buttons = [b["accessory"]["value"] for b in listing.args["blocks"] if b.get("accessory")]
    assert buttons == ["ft-b", "base"]  # none on the current model, nor on automatic (current mode)
    assert {b["accessory"]["action_id"] for b in listing.args["blocks"] if b.get("accessory")} == {
        "use_model"
    }


def test_slack_use_changes_the_model_and_tells_the_channel(h: Harness) -> None:
    response = h.command("/finetune", "use ft-b")
    assert response.status == 200 and "Switching" in response.body
    (announcement,) = h.slack.wait_for("chat.postMessage")
    assert announcement.args["channel"] == CHANNEL and "thread_ts" not in announcement.args
    assert f"<@{OWNER}> made `ft-b` this channel's model" in announcement.args["text"]
    assert "Before: `ft-a`, chosen by the promotion rule." in announcement.args["text"]
    assert "/finetune use auto" in announcement.args["text"]
    assert h.engine.current_model(TEAM, CHANNEL).id == "ft-b"
    assert not h.slack.calls_to("chat.postEphemeral")  # the change is public, not private

    h.command("/finetune", "models", user=OTHER)
    listing = h.slack.wait_for("chat.postEphemeral")[-1]
    assert f"`ft-b`, chosen by <@{OWNER}> on " in _blocks(listing)
    assert "`ft-b` *(current)*" in _blocks(listing)

    h.command("/finetune", "use base", user=OTHER)
    second = h.slack.wait_for("chat.postMessage", count=2)[-1]
    assert f"<@{OTHER}> made the base model `builtin:tiny` alone this channel's model" in second.args["text"]
    assert h.engine.current_model(TEAM, CHANNEL) is None


def test_slack_use_errors_are_private_and_say_what_is_accepted(h: Harness) -> None:
    response = h.command("/finetune", "use")
    assert "MODEL_ID" in response.body and "base" in response.body and "auto" in response.body
    h.command("/finetune", "use ft-nope")
    (error,) = h.slack.wait_for("chat.postEphemeral")
    assert "ft-nope" in error.args["text"] and "/finetune models" in error.args["text"]
    h.command("/finetune", "use ft-theirs")  # another workspace's model looks like no model
    error = h.slack.wait_for("chat.postEphemeral", count=2)[-1]
    assert "There is no model 'ft-theirs' in this workspace" in error.args["text"]
    h.command("/finetune", "use ft-a", team="T0002")  # and ours from theirs
    assert "There is no model 'ft-a'" in h.slack.wait_for("chat.postEphemeral", count=3)[-1].args["text"]
    refused = h.command("/finetune", "use base", user=STRANGER)
    assert "FTBOT_ALLOWED_USERS" in refused.body
    assert h.slack.calls_to("chat.postMessage") == []
    assert h.engine.model_choice(TEAM, CHANNEL).model_id == "ft-a"


def test_slack_use_buttons(h: Harness) -> None:
    h.engine.use_model(TEAM, CHANNEL, "base", user=OTHER)
    assert h.action("use_model", "ft-b", user=OWNER).status == 200
    (announcement,) = h.slack.wait_for("chat.postMessage")
    assert f"<@{OWNER}> made `ft-b`" in announcement.args["text"] and announcement.args["channel"] == CHANNEL
    assert "Before: the base model `builtin:tiny`, chosen by <@U0OTHER1>." in announcement.args["text"]
    h.action("use_model", "auto", user=OTHER)
    back = h.slack.wait_for("chat.postMessage", count=2)[-1]
    assert "handed this channel's model back to the promotion rule" in back.args["text"]
    assert h.engine.current_model(TEAM, CHANNEL).id == "ft-a"
    h.action("use_model", "base", user=STRANGER)
    assert "FTBOT_ALLOWED_USERS" in h.slack.wait_for("chat.postEphemeral")[0].args["text"]
    assert h.engine.model_choice(TEAM, CHANNEL).mode == "auto"


def test_the_help_and_the_promotion_message_in_slack(h: Harness) -> None:
    assert "/finetune use MODEL_ID" in h.command("/finetune", "help").body
    held = "Model X was NOT made current, because <@U0USER01> chose model Y. <b>"
    message = blocks.alert(held, "promotion")
    body = json.dumps(message.blocks)
    assert "because <@U0USER01> chose" in body and "&lt;b&gt;" in body  # the mention works, nothing else
    assert "because @U0USER01 chose" in blocks.to_plain(message)


# ------------------------------------------------------------------ console and CLI


def test_console_models_and_use(settings: Settings) -> None:
    from bot.commands.common import LOCAL_CHANNEL, LOCAL_TEAM

    team, channel = LOCAL_TEAM, LOCAL_CHANNEL  # the console's workspace, shared with the ftbot commands
    with Engine(settings) as engine:
        engine.store.add_model(_model("ft-a", team=team, channel=channel))
        engine.store.promote(team, channel, "ft-a")
        out = io.StringIO()
        Console(engine, out=out, interactive=False).run(
            [
                "/finetune models",
                "/finetune use base",
                "/finetune use ft-nope",
                "/finetune use",
                "/finetune models",
                "/help",
            ]
        )
        text = out.getvalue()
        assert engine.model_choice(team, channel).mode == "base"
    assert "ft-a (current)" in text and "chosen by the promotion rule" in text
    assert "→ use it with: /finetune use base" in text
    assert "you made the base model builtin:tiny alone this channel's model" in text
    assert "There is no model 'ft-nope'" in text and "/finetune models" in text
    assert "MODEL_ID" in text  # `/finetune use` alone says what it takes
    assert "the base model builtin:tiny alone, chosen by you on" in text
    assert "/finetune use MODEL_ID|base|auto" in text
    assert "Traceback" not in text and "&lt;" not in text


def _cli(settings: Settings, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env={"FTBOT_HOME": str(settings.home)})


def test_ftbot_models_use(settings: Settings) -> None:
    with Engine(settings) as engine:
        engine.store.add_model(_model("ft-a", team="", channel=""))
        engine.store.add_model(_model("ft-b", team="", channel="", age_days=1))
        engine.store.add_model(_model("ft-theirs", team="T0002"))
        engine.store.promote("", "", "ft-a")

    listed = _cli(settings, "models")
    assert listed.exit_code == 0, listed.output
    assert "* ft-a" in listed.output and "chosen by the promotion rule" in listed.output
    rows = json.loads(_cli(settings, "models", "--json").output)
    assert [r["id"] for r in rows] == ["ft-b", "ft-a"]
    for row in rows:  # the contract's fields are all still there
        assert {"id", "kind", "base_model", "verdict", "created_at", "current"} <= set(row)
    assert [(r["current"], r["chosen_by"]) for r in rows] == [(False, None), (True, "promotion rule")]

    used = _cli(settings, "models", "--use", "ft-b")
    assert used.exit_code == 0, used.output
    assert "Current model: ft-b, chosen by" in used.output and "--use auto" in used.output
    listed = _cli(settings, "models")
    assert "* ft-b" in listed.output and "new fine-tunes do not replace it" in listed.output
    user = json.loads(_cli(settings, "models", "--json").output)[0]["chosen_by"]
    assert user and user != "promotion rule"

    as_json = json.loads(_cli(settings, "models", "--use", "base", "--json").output)
    assert as_json["status"] == "ok" and as_json["mode"] == "base" and as_json["model_id"] is None
    assert "the base model (builtin:tiny) alone" in _cli(settings, "models").output
    assert not any(r["current"] for r in json.loads(_cli(settings, "models", "--json").output))

    back = _cli(settings, "models", "--use", "auto")
    assert back.exit_code == 0 and "ft-a, chosen by the promotion rule" in back.output

    for bad in ("ft-nope", "ft-theirs", ""):
        failed = _cli(settings, "models", "--use", bad)
        assert failed.exit_code == 1, (bad, failed.output)
        assert "Error:" in failed.output and "Traceback" not in failed.output
        assert "ftbot models" in failed.output or "base" in failed.output
    with Store.open(settings.db_path) as store:
        assert store.default_choice("", "").model_id == "ft-a"
        assert [a.subject for a in store.audit_log() if a.action == "model.use"] == ["auto", "base", "ft-b"]


def test_the_default_column_is_really_persisted(settings: Settings) -> None:
    """The base choice is a row in SQLite, not process memory (read with plain sqlite3)."""
    with Engine(settings) as engine:
        engine.use_model(TEAM, CHANNEL, "base", user=OWNER)
    rows = sqlite3.connect(settings.db_path).execute(
        "select choice, model_id, set_by from defaults where team = ? and channel = ?", [TEAM, CHANNEL]
    )
    assert list(rows) == [("base", None, OWNER)]
