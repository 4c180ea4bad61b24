"""The model server and batched generation, on builtin:tiny with real torch/peft.

The reference for correctness is the seed's way of loading a LoRA model: load the base, wrap it
with ``PeftModel.from_pretrained``, greedy ``generate`` for one prompt. The server must give the
same answer. Adapters are real PEFT adapters made here on the tiny model (random LoRA weights,
scaled so that each one changes the answers visibly), saved with ``save_pretrained``.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.backends.local_generation import Answer, generate_batch, generate_detailed
from engine.backends.local_model import four_bit_available, load_base
from engine.backends.local_serving import ModelServer
from engine.errors import BackendUnavailable, FtbotError, ModelNotFound, ResourceExhausted, UsageError
from engine.settings import BUILTIN_TINY

pytestmark = pytest.mark.slow

MAX_NEW = 12
PROMPTS = ["price of a laptop?", "Hello there, how are you today?", "json please", "a"]


def _make_adapter(base_dir: Path, out_dir: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # random A and B, so the adapter is not a no-op
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20.0)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return (
        _make_adapter(tiny_model_dir, root / "alpha", seed=1),
        _make_adapter(tiny_model_dir, root / "beta", seed=2),
    )


def _reference(
    base_dir: Path,
    adapter: Path | None,
    prompt: str | list[dict[str, str]],
    *,
    quantized: bool,
    max_new: int = MAX_NEW,
) -> str:
    """The seed's way, written independently of the server: load base (+ adapter), greedy generate."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if quantized:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=max_new, do_sample=False)
    return tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@pytest.fixture
def server(builtin_dir: Path):
    servers: list[ModelServer] = []

    def make(**kwargs: Any) -> ModelServer:
        kwargs.setdefault("builtin_dir", builtin_dir)
        kwargs.setdefault("max_new_tokens", MAX_NEW)
        kwargs.setdefault("quantize", False)
        servers.append(ModelServer(**kwargs))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


@pytest.mark.parametrize("quantize", [False, True], ids=["full-precision", "4bit"])
def test_served_answers_match_the_reference_path_and_share_one_base(
    server, tiny_model_dir: Path, adapters: tuple[Path, Path], quantize: bool
) -> None:
    if quantize and not four_bit_available():
        pytest.skip("bitsandbytes cannot quantize here")
    srv = server(quantize=quantize)
    alpha, beta = adapters
    prompt = PROMPTS[0]
    answers = {
        name: srv.ask(prompt, base_model=BUILTIN_TINY, adapter=path, label=name)
        for name, path in (("base", None), ("alpha", alpha), ("beta", beta))
    }
    for name, path in (("base", None), ("alpha", alpha), ("beta", beta)):
        assert answers[name].text == _reference(tiny_model_dir, path, prompt, quantized=quantize), name
        assert answers[name].model == name
    # Two adapters on one base answer differently (and differently from the base) ...
    assert len({a.text for a in answers.values()}) == 3
    # ... and the base was loaded once for all three.
    assert srv.base_loads == 1
    assert srv.adapter_loads == 2
    assert srv.loaded() == {BUILTIN_TINY: [str(alpha.resolve()), str(beta.resolve())]}
    # Asking the base again after the adapters still gives the base answer (adapters disabled).
    assert srv.ask(prompt, base_model=BUILTIN_TINY).text == answers["base"].text


def test_compare_gives_base_and_tuned_side_by_side(
    server, tiny_model_dir: Path, adapters: tuple[Path, Path]
) -> None:
    srv = server()
    base, tuned = srv.compare(PROMPTS[1], base_model=BUILTIN_TINY, adapter=adapters[0], label="job-1")
    assert base.adapter is None and base.model == f"base:{BUILTIN_TINY}"
    assert tuned.model == "job-1" and tuned.adapter == str(adapters[0].resolve())
    assert base.text == _reference(tiny_model_dir, None, PROMPTS[1], quantized=False)
    assert tuned.text == _reference(tiny_model_dir, adapters[0], PROMPTS[1], quantized=False)
    assert base.text != tuned.text


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    server, tiny_model_dir: Path, adapters: tuple[Path, Path]
) -> None:
    # A long window that closes as soon as the batch is full: robust on a slow machine, not slow here.
    srv = server(batch_window_seconds=10.0, max_batch_size=len(PROMPTS))
    srv.ask("warm up", base_model=BUILTIN_TINY, adapter=adapters[0])  # load first: the batch below is pure
    futures = [srv.submit(prompt, base_model=BUILTIN_TINY, adapter=adapters[0]) for prompt in PROMPTS]
    answers = [f.result(timeout=60) for f in futures]
    assert max(srv.batch_sizes) == len(PROMPTS)
    assert all(a.batch_size == len(PROMPTS) for a in answers)
    for prompt, answer in zip(PROMPTS, answers, strict=True):
        assert answer.text == _reference(tiny_model_dir, adapters[0], prompt, quantized=False), prompt
    assert len({a.text for a in answers}) == len(PROMPTS)


def test_generation_runs_on_the_server_thread_not_the_callers(server, builtin_dir: Path) -> None:
    threads: list[str] = []

    def loader(name: str) -> tuple[Any, Any]:
        threads.append(threading.current_thread().name)
        return load_base(name, quantize=False)

    srv = server(loader=loader)
    future = srv.submit("hi", base_model=BUILTIN_TINY)
    assert isinstance(future.result(timeout=60), Answer)
    assert threads == ["ftbot-generation"]


def test_adapter_eviction_is_least_recently_used_and_reload_is_correct(
    server, tiny_model_dir: Path, adapters: tuple[Path, Path]
) -> None:
    alpha, beta = adapters
    srv = server(max_adapters=1)
    first = srv.ask(PROMPTS[0], base_model=BUILTIN_TINY, adapter=alpha).text
    srv.ask(PROMPTS[0], base_model=BUILTIN_TINY, adapter=beta)
    assert srv.loaded() == {BUILTIN_TINY: [str(beta.resolve())]}
    # alpha comes back (the base's last adapter was unloaded in between) and answers as before.
    again = srv.ask(PROMPTS[0], base_model=BUILTIN_TINY, adapter=alpha).text
    assert again == first == _reference(tiny_model_dir, alpha, PROMPTS[0], quantized=False)
    assert srv.adapter_loads == 3 and srv.base_loads == 1
    # The bare base still answers as the base after adapters came and went.
    assert srv.ask(PROMPTS[0], base_model=BUILTIN_TINY).text == _reference(
        tiny_model_dir, None, PROMPTS[0], quantized=False
    )


def test_bases_are_evicted_by_count_and_by_memory(
    server, tiny_model_dir: Path, tmp_path: Path, adapters: tuple[Path, Path]
) -> None:
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other)
    srv = server(max_bases=1)
    srv.ask("hi", base_model=BUILTIN_TINY, adapter=adapters[0])
    srv.ask("hi", base_model=str(other))
    assert srv.loaded() == {str(other): []}
    assert srv.base_loads == 2

    # A memory cap smaller than base + two adapters keeps only what the current answer needs.
    capped = server(max_bases=2, max_memory_bytes=1)
    capped.ask("hi", base_model=BUILTIN_TINY, adapter=adapters[0])
    capped.ask("hi", base_model=BUILTIN_TINY, adapter=adapters[1])
    assert capped.loaded() == {BUILTIN_TINY: [str(adapters[1].resolve())]}
    capped.ask("hi", base_model=str(other))
    assert capped.loaded() == {str(other): []}


def test_a_cut_answer_carries_a_note(server) -> None:
    class SteppingClock:
        """Each reading is one second later: a deadline of 3 s passes after a few tokens."""

        def __init__(self) -> None:
            self.now = 0.0

        def __call__(self) -> float:
            self.now += 1.0
            return self.now

    srv = server(clock=SteppingClock(), max_new_tokens=50)
    timed = srv.ask(PROMPTS[0], base_model=BUILTIN_TINY, timeout_seconds=3)
    assert timed.finish_reason == "time" and timed.truncated
    assert 0 < timed.tokens < 50
    assert timed.note is not None and "3-second time limit" in timed.note

    limited = server().ask(PROMPTS[0], base_model=BUILTIN_TINY, max_new_tokens=5)
    assert limited.finish_reason == "length" and limited.tokens == 5
    assert limited.note is not None and "5-token limit" in limited.note


@pytest.mark.parametrize("prompt", ["", "   \n", [{"role": "user", "content": ""}]])
def test_an_empty_prompt_is_refused_clearly(server, prompt: Any) -> None:
    with pytest.raises(UsageError, match="question is empty"):
        server().submit(prompt, base_model=BUILTIN_TINY)


def test_bad_limits_are_refused(server) -> None:
    srv = server()
    with pytest.raises(UsageError, match="max_new_tokens"):
        srv.submit("hi", base_model=BUILTIN_TINY, max_new_tokens=0)
    with pytest.raises(UsageError, match="time limit"):
        srv.submit("hi", base_model=BUILTIN_TINY, timeout_seconds=0)
    with pytest.raises(UsageError, match="temperature"):
        srv.submit("hi", base_model=BUILTIN_TINY, temperature=-1)


def test_a_prompt_longer_than_the_context_is_refused_and_others_in_the_batch_answered(server) -> None:
    srv = server(batch_window_seconds=0.5)
    srv.ask("warm up", base_model=BUILTIN_TINY)
    too_long = srv.submit("price " * 3000, base_model=BUILTIN_TINY)
    fine = srv.submit("hi", base_model=BUILTIN_TINY)
    with pytest.raises(ResourceExhausted, match=r"at most 2048 tokens") as info:
        too_long.result(timeout=60)
    assert "Shorten the prompt" in str(info.value)
    assert fine.result(timeout=60).text


def test_a_base_that_cannot_load_is_a_clear_error_and_the_server_keeps_serving(
    server, tmp_path: Path
) -> None:
    srv = server()
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendUnavailable, match="could not be loaded") as info:
        srv.ask("hi", base_model=str(missing))
    assert "Traceback" not in str(info.value)
    assert srv.ask("hi", base_model=BUILTIN_TINY).text is not None


def test_a_missing_adapter_is_model_not_found(server, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="files are missing"):
        server().submit("hi", base_model=BUILTIN_TINY, adapter=tmp_path / "gone")


def test_an_adapter_for_another_base_fails_clearly(server, tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    # A "different base": the tiny architecture with a wider hidden size, so shapes do not match.
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.hidden_size, config.intermediate_size = 32, 64
    wide = tmp_path / "wide"
    AutoModelForCausalLM.from_config(config).save_pretrained(wide)
    adapter = _make_adapter(wide, tmp_path / "wide-adapter", seed=3)
    srv = server()
    with pytest.raises(FtbotError, match="could not be attached") as info:
        srv.ask("hi", base_model=BUILTIN_TINY, adapter=adapter)
    assert "Was it trained on this base model?" in str(info.value)
    # The failed attach left no half-loaded layers behind: the base answers as the reference.
    assert srv.ask(PROMPTS[0], base_model=BUILTIN_TINY).text == _reference(
        tiny_model_dir, None, PROMPTS[0], quantized=False
    )


def test_sampling_with_temperature_runs(server) -> None:
    answer = server().ask("hi", base_model=BUILTIN_TINY, temperature=0.8)
    assert answer.tokens > 0


def test_generate_batch_equals_one_at_a_time_in_input_order(
    tiny_model_dir: Path, adapters: tuple[Path, Path]
) -> None:
    from peft import PeftModel

    model, tokenizer = load_base(str(tiny_model_dir), quantize=False)
    model = PeftModel.from_pretrained(model, adapters[1])
    conversations = [
        [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": p}] for p in PROMPTS
    ]
    batched = generate_batch(model, tokenizer, conversations, max_new_tokens=MAX_NEW, batch_size=3)
    single = [
        generate_batch(model, tokenizer, [c], max_new_tokens=MAX_NEW, batch_size=1)[0] for c in conversations
    ]
    assert batched == single
    assert len(set(batched)) == len(PROMPTS)
    details = generate_detailed(model, tokenizer, conversations[:1], max_new_tokens=3)
    assert details[0].tokens == 3 and details[0].finish_reason == "length"


def test_generate_batch_names_the_conversation_that_does_not_fit(tiny_model_dir: Path) -> None:
    model, tokenizer = load_base(str(tiny_model_dir), quantize=False)
    conversations = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "price " * 3000}]]
    with pytest.raises(ResourceExhausted, match="Conversation 2"):
        generate_batch(model, tokenizer, conversations, max_new_tokens=4)


def test_after_a_real_training_run_the_served_answer_matches_the_reference(
    server, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A real (short) QLoRA run through local_qlora.train, then the model served with the system
    prompt it was trained with, against the reference path."""
    import json

    from engine.backends.local_qlora import train
    from engine.config import TrainConfig
    from engine.progress import NullSink

    lines = (Path(__file__).resolve().parent.parent / "examples" / "prices.jsonl").read_text().splitlines()
    examples = [json.loads(line)["messages"] for line in lines[:26]]
    result = train(
        job_id="serve-test",
        base_model=str(tiny_model_dir),
        train_examples=examples[:24],
        eval_examples=[],
        config=TrainConfig(epochs=1, batch_size=8, grad_accum=1, learning_rate=5e-3, lora_r=8),
        output_dir=tmp_path / "run",
        sink=NullSink(),
        should_stop=lambda: False,
    )
    system = examples[0][0]["content"]
    srv = server(quantize=result.quantized)
    for example in examples[24:]:
        question = example[1]["content"]
        served = srv.ask(question, base_model=BUILTIN_TINY, adapter=result.adapter_dir, system_prompt=system)
        reference = _reference(
            tiny_model_dir,
            result.adapter_dir,
            [{"role": "system", "content": system}, {"role": "user", "content": question}],
            quantized=result.quantized,
        )
        assert served.text == reference
    assert srv.base_loads == 1 and srv.adapter_loads == 1


# ------------------------------------------------------------------ the engine and the CLI


def _register(
    settings: Any, model_id: str, adapter: Path, *, team: str = "", channel: str = "", default: bool = True
) -> None:
    from datetime import UTC, datetime

    from engine import ModelRecord, Store

    store = Store.open(settings.db_path, datasets_dir=settings.datasets_dir)
    try:
        store.add_model(
            ModelRecord(
                id=model_id,
                kind="local_adapter",
                base_model=BUILTIN_TINY,
                job_id=None,
                team=team,
                channel=channel,
                created_at=datetime.now(UTC),
                path=adapter,
                verdict="improved",
                system_prompt="Answer briefly.",
            )
        )
        if default:
            store.set_default(team, channel, model_id)
    finally:
        store.close()


def _reference_with_system(tiny_model_dir: Path, adapter: Path | None, prompt: str, max_new: int) -> str:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompt}]
    # A CPU serves in fp32 (load_base: 4-bit only on a GPU), as the CPU recipe trains.
    return _reference(tiny_model_dir, adapter, messages, quantized=False, max_new=max_new)


def test_ftbot_ask_and_models(settings: Any, tiny_model_dir: Path, adapters: tuple[Path, Path]) -> None:
    import json

    from click.testing import CliRunner

    from bot.cli import main

    env = {"FTBOT_HOME": str(settings.home), "FTBOT_ASK_MAX_NEW_TOKENS": str(MAX_NEW)}
    runner = CliRunner()
    empty = runner.invoke(main, ["models", "--json"], env=env)
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []

    _register(settings, "m-alpha", adapters[0])
    listed = runner.invoke(main, ["models", "--json"], env=env)
    assert listed.exit_code == 0
    (row,) = json.loads(listed.stdout)
    assert row["id"] == "m-alpha" and row["current"] is True and row["path"] == str(adapters[0])
    table = runner.invoke(main, ["models"], env=env)
    assert table.exit_code == 0 and "* m-alpha" in table.stdout

    answered = runner.invoke(main, ["ask", "--json", PROMPTS[0]], env=env)
    assert answered.exit_code == 0, answered.output
    answer = json.loads(answered.stdout)
    assert answer["model"] == "m-alpha"
    # The current model answers with the system prompt it was trained with, as the reference path does.
    assert answer["text"] == _reference_with_system(tiny_model_dir, adapters[0], PROMPTS[0], MAX_NEW)

    compared = runner.invoke(main, ["ask", "--compare", "--json", PROMPTS[0]], env=env)
    assert compared.exit_code == 0, compared.output
    both = json.loads(compared.stdout)
    assert both["finetuned"]["text"] == answer["text"]
    assert both["base"]["text"] == _reference_with_system(tiny_model_dir, None, PROMPTS[0], MAX_NEW)

    plain = runner.invoke(main, ["ask", PROMPTS[0]], env=env)
    assert plain.exit_code == 0 and plain.stdout.strip() == answer["text"]
    assert "Answered by m-alpha" in plain.stderr and "not meaningful" in plain.stderr

    unknown = runner.invoke(main, ["ask", "--model", "nope", "hi"], env=env)
    assert (
        unknown.exit_code == 1 and "No model 'nope'" in unknown.stderr and "Traceback" not in unknown.output
    )
    blank = runner.invoke(main, ["ask", "  "], env=env)
    assert blank.exit_code == 1 and "question is empty" in blank.stderr
    too_long = runner.invoke(main, ["ask", "price " * 3000], env=env)
    assert too_long.exit_code == 1 and "Shorten the prompt" in too_long.stderr


def test_models_of_another_workspace_are_invisible(settings: Any, adapters: tuple[Path, Path]) -> None:
    from engine import Engine, ModelNotFound

    _register(settings, "theirs", adapters[1], team="T-other", channel="C1")
    with Engine(settings) as engine:
        assert [m.id for m in engine.models("T-other")] == ["theirs"]
        assert engine.models("T-mine") == []
        with pytest.raises(ModelNotFound):
            engine.ask("hi", model="theirs", team="T-mine", channel="C1")


def test_a_closed_server_refuses_new_questions(server) -> None:
    srv = server()
    pending = srv.submit("hi", base_model=BUILTIN_TINY)
    srv.close()
    assert pending.result(timeout=60).text is not None  # queued before close: still answered
    with pytest.raises(UsageError, match="shut down"):
        srv.submit("hi", base_model=BUILTIN_TINY)
