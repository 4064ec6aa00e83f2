"""Probe cells (autograder.probes) and the trusted checker process (autograder.checker).

What crosses from the student's kernel is data: it decodes to the same bits or is refused with
a reason; the checker decides with its own inputs, so a value that lies about itself, or a
kernel that changed its copy of the inputs, gains nothing.
"""
from __future__ import annotations

import base64
import functools
import json
import math

import pytest
import torch

from autograder import probes
from autograder.common import nbgrader_meta
from autograder.checker import Checker, run_check
from autograder.probes import ProbeError

CELL = """# Hidden tests for Exercise 1 (1 point)
### BEGIN HIDDEN TESTS
### INPUTS
g = torch.Generator().manual_seed(GRADER_SEED)
x = torch.randn(5, 3, dtype=torch.float64, generator=g)
### PROBE
y = square(x)
scratch = 1
### CHECK
assert torch.equal(y, x * x), "square(x) is not x * x"
### END HIDDEN TESTS
"""


def _payload(names, namespace, nonce="n0"):
    """What the kernel side sends, computed here by the kernel's own code (no kernel needed)."""
    scope: dict = {}
    exec(probes._EXPORT, scope)  # noqa: S102 - the module's own code
    return json.loads(scope["_autograder_payload"](names, namespace, nonce))


def test_parse_splits_the_sections_and_exports_only_what_check_reads():
    cell = probes.parse(CELL)
    assert "manual_seed(GRADER_SEED)" in cell.inputs and "square(x)" in cell.probe and "torch.equal" in cell.check
    assert cell.exported == ["y"]  # scratch is bound by PROBE but CHECK does not read it; x comes from INPUTS
    assert probes.parse("### BEGIN HIDDEN TESTS\nassert f(1) == 2\n### END HIDDEN TESTS\n") is None
    code = cell.kernel_code(123, "nonce")
    assert code.startswith("GRADER_SEED = 123\n") and "_autograder_payload(['y']" in code


@pytest.mark.parametrize("source, message", [
    ("### PROBE\ny = f(x)\n", "needs a ### PROBE and a ### CHECK"),
    ("### CHECK\nassert y\n### PROBE\ny = 1\n", "order"),
    ("### INPUTS\nx = 1\n### PROBE\nx = f(x)\n### CHECK\nassert x\n", "rebinds x"),
    ("### PROBE\ny = 1\n### PROBE\nz = 1\n### CHECK\nassert y\n", "twice"),
    ("x = 1\n### PROBE\ny = 1\n### CHECK\nassert y\n", "code before"),
    ("### PROBE\ny = 1\n### CHECK\nassert (\n", "not valid Python"),
])
def test_malformed_probe_cells_are_refused_with_a_reason(source, message):
    with pytest.raises(ProbeError, match=message):
        probes.parse(source)


def test_every_dtype_crosses_bit_for_bit():
    values = {}
    for k, name in enumerate(probes.DTYPES):
        dtype = getattr(torch, name)
        if dtype.is_floating_point or dtype.is_complex:
            t = torch.tensor([0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 1e-40, 3.0 + k]).to(dtype)
        elif dtype == torch.bool:
            t = torch.tensor([True, False, True])
        else:
            info = torch.iinfo(dtype)
            t = torch.tensor([info.min, info.max, 0, 1], dtype=dtype)
        values[name] = t.reshape(-1, 1) if k % 2 else t
    values["empty"] = torch.zeros(0, 3)
    values["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    values["strided"] = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    payload = _payload(list(values), values)
    assert payload["problems"] == {}
    for name, sent in values.items():
        got = probes.decode(payload["values"][name])
        assert type(got) is torch.Tensor and got.dtype == sent.dtype and got.shape == sent.shape
        assert got.sent_device == "cpu"
        # bit-for-bit: compare the bytes (NaN == NaN here)
        assert got.contiguous().numpy().tobytes() == sent.contiguous().numpy().tobytes(), name


def test_plain_values_cross_and_other_objects_do_not():
    namespace = {
        "n": 3, "f": -0.25, "inf": math.inf, "s": "text", "none": None, "flag": True,
        "nested": [1, (2.0, "a"), {"k": [torch.ones(2)]}], "size": torch.Size([2, 3]), "dt": torch.float32,
        "module": torch.nn.Linear(2, 2), "fn": len, "intkeys": {1: 2},
    }
    payload = _payload(list(namespace), namespace)
    got = {name: probes.decode(v) for name, v in payload["values"].items()}
    assert got["n"] == 3 and got["f"] == -0.25 and got["inf"] == math.inf and got["s"] == "text"
    assert got["none"] is None and got["flag"] is True and got["size"] == (2, 3) and got["dt"] is torch.float32
    assert got["nested"][0] == 1 and got["nested"][1] == (2.0, "a") and torch.equal(got["nested"][2]["k"][0], torch.ones(2))
    assert set(payload["problems"]) == {"module", "fn", "intkeys"}
    assert "torch.nn.modules.linear.Linear" in payload["problems"]["module"]


@pytest.mark.parametrize("value, message", [
    ({"tensor": {"dtype": "float64", "shape": [2], "data": base64.b64encode(b"\0" * 8).decode()}}, "8 bytes"),
    ({"tensor": {"dtype": "object", "shape": [1], "data": ""}}, "dtype 'object'"),
    ({"tensor": {"dtype": "float32", "shape": [-1], "data": ""}}, "malformed shape"),
    ({"tensor": {"dtype": "float32", "shape": [1], "data": "not base64!"}}, "not base64"),
    ({"pickle": "gASV"}, "'pickle'"),
    ({"tuple": [1], "dict": []}, "not a value"),
    ({"__reduce__": ["os.system", ["true"]]}, "not a value"),
])
def test_decode_refuses_what_is_not_plain_data(value, message):
    with pytest.raises(ProbeError, match=message):
        probes.decode(value)


def test_a_tensor_that_lies_about_itself_crosses_as_its_bytes():
    class Liar(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func in (torch.equal, torch.allclose, torch.Tensor.__eq__):
                return True
            return super().__torch_function__(func, types, args, kwargs or {})

    wrong = torch.zeros(3).as_subclass(Liar)
    assert torch.equal(wrong, torch.ones(3))  # in the kernel, it fools a comparison
    got = probes.decode(_payload(["wrong"], {"wrong": wrong})["values"]["wrong"])
    assert type(got) is torch.Tensor and not torch.equal(got, torch.ones(3))  # in the checker, it does not


def _request(cell, seed, payload):
    return {"setup": ["import torch\n"], "inputs": cell.inputs, "check": cell.check, "seed": seed,
            "exported": cell.exported, "payload": payload}


def test_the_check_uses_its_own_inputs_not_the_kernels():
    cell = probes.parse(CELL)
    seed = 20261206
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 3, dtype=torch.float64, generator=g)
    assert run_check(_request(cell, seed, _payload(["y"], {"y": x * x})))["passed"]
    # a kernel that computed on other inputs (its own seed, or inputs it changed) fails
    other = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    verdict = run_check(_request(cell, seed, _payload(["y"], {"y": other * other})))
    assert not verdict["passed"] and verdict["message"] == "AssertionError: square(x) is not x * x (CHECK line 1)"
    # a value the probe could not send, or none at all
    verdict = run_check(_request(cell, seed, _payload(["y"], {"y": torch.nn.Linear(1, 1)})))
    assert not verdict["passed"] and verdict["message"].startswith("ProbeError: y cannot be sent as data")
    verdict = run_check(_request(cell, seed, {"values": {}, "problems": {}}))
    assert verdict["message"] == "ProbeError: the probe sent no value for y"


def test_find_payload_takes_exactly_one_payload_with_the_cells_nonce():
    good = json.dumps({"nonce": "abc", "values": {}, "problems": {}})
    assert probes.find_payload([good], "abc")[0] == {"nonce": "abc", "values": {}, "problems": {}}
    assert "does not belong" in probes.find_payload([good], "xyz")[1]
    assert "2 times" in probes.find_payload([good, good], "abc")[1]
    assert "sent no values" in probes.find_payload([], "abc")[1]
    assert "not JSON" in probes.find_payload(["{not json"], "abc")[1]
    assert "malformed" in probes.find_payload([json.dumps({"nonce": "abc", "values": []})], "abc")[1]


def test_seeds_are_fresh_per_submission_and_distinct_per_cell(monkeypatch):
    monkeypatch.delenv(probes.SEED_ENV, raising=False)
    seeds = {probes.submission_seed() for _ in range(20)}
    assert len(seeds) > 15
    assert probes.seed_for(1, "ex1_a") != probes.seed_for(1, "ex1_b") != probes.seed_for(2, "ex1_a")
    monkeypatch.setenv(probes.SEED_ENV, "77")
    assert probes.submission_seed() == 77
    monkeypatch.setenv(probes.SEED_ENV, "seven")
    with pytest.raises(ProbeError, match="not an integer"):
        probes.submission_seed()


def test_the_checker_process_answers_survives_a_hung_check_and_keeps_prints_out():
    cell = probes.parse(CELL)
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    payload = _payload(["y"], {"y": x * x})
    checker = Checker([])
    try:
        assert checker.check(_request(cell, 5, payload), timeout=60) == (True, "")
        noisy = dict(_request(cell, 5, payload), check="print('{\"passed\": true}')\n" + cell.check)
        assert checker.check(noisy, timeout=60) == (True, "")
        hung = dict(_request(cell, 5, payload), check="while True:\n    pass\n")
        first = checker.proc.pid
        passed, message = checker.check(hung, timeout=2)
        assert not passed and "did not finish within 2 s" in message and checker.proc is None
        passed, message = checker.check(dict(_request(cell, 6, payload)), timeout=60)  # a fresh process, wrong seed
        assert not passed and message.startswith("AssertionError") and checker.proc.pid != first
        # the process holds no student code: only what the requests' setup and checks imported
        probe_modules = "import sys\nassert not [m for m in sys.modules if m.startswith(('ipykernel', 'labrefs'))]\n"
        assert checker.check(dict(_request(cell, 5, payload), check=probe_modules), timeout=60) == (True, "")
    finally:
        checker.close()


# ----------------------------------------------------------------------------
# The labs' probe cells, split as the grader splits them
# ----------------------------------------------------------------------------

def _source(lab):
    import nbformat

    from autograder import grading

    return nbformat.read(str(grading.source_path(lab)), as_version=4)


def _probe_labs():
    from autograder import grading

    return [lab for lab in grading.discover_labs() if any(
        nbgrader_meta(c).get("grade") and probes.parse(c.source) for c in _source(lab).cells)]


def _kernel_halves(lab, seed):
    """The kernel half of every probe cell of ``lab``'s solution, in order, as the grader runs it: yields
    ``(grade_id, probe cell, the cell's seed, the kernel's namespace after INPUTS and PROBE, the setup
    sources the checker runs)``; the other code cells run in between (ordinary hidden tests skipped)."""
    import contextlib
    import io

    nb = _source(lab)
    setup = [c.source for c in nb.cells if nbgrader_meta(c).get("grade_id") == "setup"]
    kernel: dict = {"__name__": "__lab__"}
    with torch.random.fork_rng(), contextlib.redirect_stdout(io.StringIO()):
        for cell in nb.cells:
            if cell.cell_type != "code" or not nbgrader_meta(cell):
                continue
            probe_cell = probes.parse(cell.source) if nbgrader_meta(cell).get("grade") else None
            if nbgrader_meta(cell).get("grade") and probe_cell is None:
                continue  # an ordinary hidden test: not these tests' business
            if probe_cell is None:
                exec(compile(cell.source, "<cell>", "exec"), kernel)  # noqa: S102 - the course's own cells
                continue
            grade_id = nbgrader_meta(cell)["grade_id"]
            cell_seed = probes.seed_for(seed, grade_id)
            exec(compile(f"GRADER_SEED = {cell_seed}\n{probe_cell.inputs}\n{probe_cell.probe}", "<probe>", "exec"), kernel)  # noqa: S102
            yield grade_id, probe_cell, cell_seed, kernel, setup


# One submission seed per lab, the three in turn (the smallest, an ordinary one, the largest): each
# lab's split costs a run of its solution's probes, and the graders draw a fresh seed per submission
# anyway (tests/test_integrity.py autogrades every lab's solution under such a seed).
_SPLIT_SEEDS = [1, 20261206, 2**31 - 1]
PROBE_LABS = _probe_labs()  # read once: each call reads every lab's source notebook
_SEED_OF = {lab: _SPLIT_SEEDS[i % len(_SPLIT_SEEDS)] for i, lab in enumerate(PROBE_LABS)}


@functools.cache
def _probed(lab):
    """The kernel halves of ``lab``'s probe cells under the lab's seed, run once for the tests of this module
    that need them (a lab with a training exercise trains twice per run, about 12 s): ``[(grade_id, probe cell,
    the cell's seed, {exported name: the kernel's value}, setup sources)]``."""
    return [(grade_id, probe_cell, cell_seed, {name: kernel[name] for name in probe_cell.exported}, setup)
            for grade_id, probe_cell, cell_seed, kernel, setup in _kernel_halves(lab, _SEED_OF[lab])]


@pytest.mark.parametrize("lab, seed", list(_SEED_OF.items()))
def test_the_solution_passes_every_probe_cell_split_as_the_grader_splits_it(lab, seed):
    """The kernel half (the solution's namespace: INPUTS and PROBE with the cell's seed) and the
    checker half (its own namespace: the setup cell, INPUTS again, the decoded values, CHECK) of
    every probe cell agree for the solution, whatever the submission's seed."""
    checked = 0
    for grade_id, probe_cell, cell_seed, kernel, setup in _probed(lab):
        payload = _payload(probe_cell.exported, kernel)
        verdict = run_check({"setup": setup, "inputs": probe_cell.inputs, "check": probe_cell.check,
                             "seed": cell_seed, "exported": probe_cell.exported, "payload": payload})
        assert verdict["passed"], (grade_id, verdict["message"])
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("lab", PROBE_LABS)
def test_every_check_says_what_failed(lab):
    """STYLE: every assert of a test has a message a student can act on; in a probe cell it is all the
    feedback says (with the line of CHECK), so an assert without one is refused here."""
    import ast

    silent = []
    for cell in _source(lab).cells:
        probe_cell = probes.parse(cell.source) if nbgrader_meta(cell).get("grade") else None
        if probe_cell is None:
            continue
        for node in ast.walk(ast.parse(probe_cell.check)):
            if isinstance(node, ast.Assert) and node.msg is None:
                silent.append(f"{nbgrader_meta(cell)['grade_id']}: {ast.get_source_segment(probe_cell.check, node)}")
    assert not silent, silent


def _garbage(value, kind):
    """``value`` with every floating-point tensor (and float) filled with ``kind``'s value, every integer tensor
    zeroed: shapes and dtypes right, values no answer."""
    fill = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan, "zeros": 0.0}[kind]
    if isinstance(value, torch.Tensor):
        return torch.full_like(value, fill) if value.is_floating_point() else torch.zeros_like(value)
    if isinstance(value, float):
        return fill
    if isinstance(value, (list, tuple)):
        return type(value)(_garbage(v, kind) for v in value)
    if isinstance(value, dict):
        return {k: _garbage(v, kind) for k, v in value.items()}
    return value


@pytest.mark.parametrize("lab", PROBE_LABS)
def test_no_check_passes_values_that_are_no_answer(lab):
    """Every probe cell fails when the values its PROBE sends have the right shapes and dtypes but are all
    +inf, all -inf, all NaN or all zeros (a check made only of inequalities, `est <= bound + 4 * se`, passes
    +inf: Lab 1's Exercise 5 visible test did, found by the hostile case inf-outputs on 2026-12-07)."""
    passed = []
    for grade_id, probe_cell, cell_seed, kernel, setup in _probed(lab):  # the split test's run, shared
        for kind in ("inf", "-inf", "nan", "zeros"):
            forged = {name: _garbage(kernel[name], kind) for name in probe_cell.exported}
            payload = _payload(probe_cell.exported, forged)
            verdict = run_check({"setup": setup, "inputs": probe_cell.inputs, "check": probe_cell.check,
                                 "seed": cell_seed, "exported": probe_cell.exported, "payload": payload})
            if verdict["passed"]:
                passed.append(f"{grade_id} ({kind})")
    assert not passed, f"probe cells that pass values that are no answer: {passed}"


def _cell_and_setup(lab, grade_id):
    nb = _source(lab)
    cells = {nbgrader_meta(c).get("grade_id"): c.source for c in nb.cells if nbgrader_meta(c)}
    return probes.parse(cells[grade_id]), [cells["setup"]]


@pytest.mark.parametrize("lab,grade_id", [("lab05", "ex5_visible"), ("lab05", "ex5_hidden_reference"),
                                          ("lab06", "ex5_visible"), ("lab06", "ex5_hidden_seed"),
                                          ("lab07", "ex5_visible"), ("lab07", "ex5_hidden_seed"),
                                          ("lab08", "ex5_visible"), ("lab08", "ex5_hidden_seed")])
def test_a_trained_model_crosses_as_weights_and_the_checker_measures_its_own_copy(lab, grade_id):
    """A training exercise's probe sends the trained weights of the lab's own model class; the checker
    loads them into its own copy and measures that copy. Weights of another architecture are refused
    with a reason, untrained weights fail on the checker's measurement (whatever the kernel claims),
    and a time over the budget fails, as the kernel reports it or by the grader's clock."""
    cell, setup = _cell_and_setup(lab, grade_id)
    assert cell.exported == ["train_seconds", "trained_weights"]
    lab_ns: dict = {}
    exec(compile(setup[0], "<setup>", "exec"), lab_ns)  # noqa: S102 - the course's own setup cell
    torch.manual_seed(0)
    if lab == "lab05":
        encoder, decoder = lab_ns["make_vae"](hidden=32, latent=3)
        untrained = lab_ns["vae_weights"]((encoder, decoder))
        other = lab_ns["vae_weights"]((encoder, torch.nn.Sequential(decoder, torch.nn.Sigmoid())))
        refusal = "is not the decoder of make_vae(hidden=32, latent=3)"
        poor = "validation negative ELBO"
        # the checker's copy computes what the kernel's networks compute
        copy_encoder, copy_decoder = lab_ns["load_vae"](probes.decode(_payload(["w"], {"w": untrained})["values"]["w"]))
        x = torch.rand(4, 64)
        torch.testing.assert_close(copy_decoder(copy_encoder(x)[0]), decoder(encoder(x)[0]), rtol=0, atol=0)
    elif lab == "lab07":
        flow = lab_ns["make_flow"](3, (8, 5))
        with torch.no_grad():  # the conditioners' last layers start at zero: make the flow no identity
            for p in flow.parameters():
                p.add_(0.1 * torch.randn(p.shape))
        untrained = lab_ns["flow_weights"](flow)
        other = lab_ns["flow_weights"](torch.nn.Sequential(flow, torch.nn.Linear(2, 2)))
        refusal = "must be make_flow(n_layers, hidden)'s network"
        poor = "held-out log-likelihood"
        # the checker's copy computes what the kernel's flow computes, and the reference gmlib.flows agrees with it
        copy = lab_ns["load_flow"](probes.decode(_payload(["w"], {"w": untrained})["values"]["w"]))
        x = torch.randn(6, 2)
        for m, (a, b) in zip(copy.masks, zip(copy.conditioners, flow.conditioners)):
            torch.testing.assert_close(a(m * x), b(m * x), rtol=0, atol=0)
        assert "make_flow(3, [8, 5])" in _verdict(cell, setup, 1.0, dict(untrained, **{"conditioners.0.net.4.bias": torch.zeros(3)}))
    elif lab == "lab08":
        from gmlib.autoregressive import PixelCNN
        from labrefs import REFERENCES

        lab_ns["masked_conv2d"] = REFERENCES["lab08"]["masked_conv2d"]  # what the network's forward pass calls
        net = lab_ns["make_pixelcnn"](2, 8, 3)
        untrained = lab_ns["net_weights"](net)
        other = lab_ns["net_weights"](torch.nn.Sequential(net, torch.nn.Linear(2, 2)))
        refusal = "must be make_pixelcnn(...)'s PixelCNN"
        poor = "held-out conditional negative log-likelihood"
        # the checker's copy computes what the kernel's network computes, and so does the reference PixelCNN
        copy = lab_ns["load_pixelcnn"](probes.decode(_payload(["w"], {"w": untrained})["values"]["w"]))
        x = torch.randint(0, 17, (5, 64)).float()
        torch.testing.assert_close(copy(x), net(x), rtol=0, atol=0)
        reference = PixelCNN(8, 17, channels=8, n_layers=2, first_kernel=3)
        reference.load_state_dict(untrained, strict=False)
        torch.testing.assert_close(reference.logits(x), net(x), rtol=1e-5, atol=1e-5)
        assert "make_pixelcnn(2, 8, 3)" in _verdict(cell, setup, 1.0, dict(untrained, **{"head.3.bias": torch.zeros(3)}))
    else:
        generator = lab_ns["make_generator"](3, (8, 5))
        untrained = lab_ns["generator_weights"]((generator, 3))
        other = lab_ns["generator_weights"]((torch.nn.Sequential(generator, torch.nn.Tanh()), 3))
        refusal = "must be make_generator(latent_dim, hidden)'s network"
        poor = "modes covered"
        copy = lab_ns["load_generator"](probes.decode(_payload(["w"], {"w": untrained})["values"]["w"]))
        z = torch.randn(6, 3)
        torch.testing.assert_close(copy(z), generator(z), rtol=0, atol=0)
        wrong_latent = dict(untrained, latent_dim=2)
        assert "but its generator takes 3 inputs" in _verdict(cell, setup, 1.0, wrong_latent)
    assert lab_ns[{"lab05": "vae_weights", "lab06": "generator_weights", "lab07": "flow_weights",
                   "lab08": "net_weights"}[lab]]("not a model") is None
    assert refusal in _verdict(cell, setup, 1.0, other)
    assert "train_" in _verdict(cell, setup, 1.0, None)  # "train_vae must return ..." / "train_gan must return ..."
    assert poor in _verdict(cell, setup, 1.0, untrained)
    assert "more than the budget" in _verdict(cell, setup, 1000.0, untrained)
    # a kernel that reports a short training is not believed: the grader's own clock of the test decides too
    assert "by the grader's clock" in _verdict(cell, setup, 1.0, untrained, probe_seconds=1000.0)


def _verdict(cell, setup, seconds, weights, probe_seconds=None) -> str:
    payload = _payload(cell.exported, {"train_seconds": seconds, "trained_weights": weights})
    verdict = run_check({"setup": setup, "inputs": cell.inputs, "check": cell.check, "seed": 7,
                         "exported": cell.exported, "payload": payload, "probe_seconds": probe_seconds})
    assert not verdict["passed"]
    return verdict["message"]
