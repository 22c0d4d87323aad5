"""The sampling program's format (fastgen/program.py): the C++ layout header is generated from the
Python definitions, every model's program reads back the same through the C++ reader, altered
layouts and bad programs are caught, and the recurrent node (PixelRNN's LSTM cell) means what its
docstring says on every interpreter."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import fastgen
from fastgen import program as P
from fastgen.models import GatedPixelCNN, PixelCNN
from fastgen.ops import sample_program
from fastgen.program import Carry, CategoricalDraw, Conv, LSTMCell, ProgramError, SamplingProgram, Stream, Term
from fastgen.sampling import draw_noise

from .conftest import compiled_cpu
from .test_sample_program import make, make_cond, make_pp

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "csrc" / "common" / "sample_program_layout.h"
NOT_BUILT = pytest.mark.skipif(not compiled_cpu("sample_program_describe"), reason="fastgen._C not built")


def model_programs():
    """(name, program) of every model kind with every kind of conditioning it takes."""
    out = []
    for cls in (PixelCNN, GatedPixelCNN):
        for channels in (1, 3):
            for cond in (None, "class", "spatial", "both"):
                model = make(cls, channels, cond)
                with torch.no_grad():
                    program = model.sampling_program(model.prepare_cond(make_cond(cond, 2), 2))
                out.append((f"{cls.__name__}-{channels}-{cond}", program))
    for channels, classes, nr_resnet in ((3, None, 1), (1, 3, 2)):
        model = make_pp(channels, 256, n_classes=classes, nr_resnet=nr_resnet)
        with torch.no_grad():
            program = model.sampling_program(model.prepare_cond(torch.arange(2) % 3 if classes else None, 2))
        out.append((f"PixelCNNpp-{channels}-{classes}-{nr_resnet}", program))
    return out + [(f"lstm-{carry.name}", lstm_program(carry)) for carry in Carry]


# -- toy recurrent programs -------------------------------------------------------------------------

HID, LEVELS, SIZE = 3, 4, (4, 5)


def lstm_program(carry: Carry, seed: int = 0) -> SamplingProgram:
    """A one-layer recurrent model in program nodes: the input-to-state part reads the image left of
    the pixel (ABOVE and LEFT cells) or the row above (a RIGHT cell, a ROW stream), the cell's
    recurrent terms read its own h as a Row LSTM (ABOVE), a Diagonal LSTM (LEFT) or the
    right-to-left half of a Diagonal BiLSTM (RIGHT) would, then a 1x1 head."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    p = SamplingProgram(1, LEVELS, *SIZE)
    stream = Stream.ROW if carry == Carry.RIGHT else Stream.PIXEL
    gates = p.value(4 * HID, stream)
    if carry == Carry.RIGHT:
        p.add(Conv(gates, [Term(p.IMAGE, rand(4 * HID, 1, 1, 3), rand(4 * HID), top=1, left=1)]))
        recurrent = rand(4 * HID, HID, 2, 2)
        recurrent[:, :, 1, 0] = 0  # its own row: only the column to the right
        term = Term(0, recurrent, rand(4 * HID), top=1, left=0)
    else:
        w = rand(4 * HID, 1, 2, 3)
        w[:, :, 1, 1:] = 0  # the current row up to, not including, the pixel (mask A)
        p.add(Conv(gates, [Term(p.IMAGE, w, rand(4 * HID), top=1, left=1)]))
        if carry == Carry.ABOVE:
            term = Term(0, rand(4 * HID, HID, 1, 3), rand(4 * HID), top=1, left=1)  # the row above
        else:
            recurrent = rand(4 * HID, HID, 2, 2)
            recurrent[:, :, 1, 1] = 0  # (a - 1, b - 1), (a - 1, b), (a, b - 1)
            term = Term(0, recurrent, rand(4 * HID), top=1, left=1)
    h, c = p.value(HID, stream), p.value(HID, stream)
    term.src = h
    p.add(LSTMCell(h, c, gates, [term], carry))
    logits = p.value(LEVELS, Stream.PIXEL)
    w_in = rand(LEVELS, 1, 1, 2)
    w_in[:, :, 0, 1] = 0
    p.add(Conv(logits, [Term(h, rand(LEVELS, HID, 1, 1), rand(LEVELS)), Term(p.IMAGE, w_in, top=0, left=1)]))
    p.add(CategoricalDraw(logits))
    return p


def lstm_forward(p: SamplingProgram, image: torch.Tensor) -> torch.Tensor:
    """The toy program's logits (N, L, H, W) on a whole image, written out as loops over positions
    from the LSTMCell docstring: the check of the interpreters' recurrence semantics."""
    conv, cell, head = p.nodes[0], p.nodes[1], p.nodes[2]
    n, _, height, width = image.shape
    x = image.double() * (2.0 / (LEVELS - 1)) - 1.0
    h = torch.zeros(n, HID, height, width, dtype=torch.float64)
    c = torch.zeros_like(h)

    def tap_sum(term, src, a, b, skip_unknown):
        kh, kw = term.weight.shape[2:]
        total = term.bias.clone() if term.bias is not None else 0.0
        for ty in range(kh):
            for tx in range(kw):
                r, col = a - term.top + ty, b - term.left + tx
                if 0 <= r < height and 0 <= col < width and not skip_unknown(r, col):
                    total = total + src[:, :, r, col] @ term.weight[:, :, ty, tx].T
        return total

    order = [(a, b) for a in range(height) for b in (reversed(range(width)) if cell.carry == Carry.RIGHT
                                                     else range(width))]
    for a, b in order:
        gates = tap_sum(conv.terms[0], x, a, b, lambda r, col: False)
        gates = gates + tap_sum(cell.recurrent[0], h, a, b, lambda r, col: False)
        i, f, o, g = gates.chunk(4, dim=1)
        prev = {Carry.ABOVE: (a - 1, b), Carry.LEFT: (a, b - 1), Carry.RIGHT: (a, b + 1)}[cell.carry]
        inside = 0 <= prev[0] and 0 <= prev[1] < width
        c_prev = c[:, :, prev[0], prev[1]] if inside else 0.0
        c[:, :, a, b] = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        h[:, :, a, b] = torch.sigmoid(o) * torch.tanh(c[:, :, a, b])
    logits = torch.zeros(n, LEVELS, height, width, dtype=torch.float64)
    for a in range(height):
        for b in range(width):
            logits[:, :, a, b] = tap_sum(head.terms[0], h, a, b, lambda r, col: False) + \
                tap_sum(head.terms[1], x, a, b, lambda r, col: False)
    return logits


IMPLEMENTATIONS = [pytest.param("reference", id="reference"),
                   pytest.param("cpp", id="cpp", marks=NOT_BUILT),
                   pytest.param("block", id="block", marks=NOT_BUILT)]


def run(program, image, known, noise, impl):
    if impl == "block":
        return torch.ops.fastgen.sample_program_block(*program.encode(), image, known, noise, True)
    with fastgen.use_reference(impl == "reference"):
        return sample_program(program, image, known, noise, True)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("carry", list(Carry), ids=[c.name for c in Carry])
def test_lstm_cell_follows_its_definition(impl, carry):
    program = lstm_program(carry)
    program.check(batch=3)
    image = torch.zeros(3, 1, *SIZE, dtype=torch.long)
    known = torch.zeros_like(image, dtype=torch.bool)
    noise = draw_noise(3, (1, *SIZE), generator=torch.Generator().manual_seed(1))
    images, logits = run(program, image, known, noise, impl)
    assert len(torch.unique(images)) > 1
    torch.testing.assert_close(logits, lstm_forward(program, images), rtol=1e-10, atol=1e-10)
    if impl != "reference":
        reference, _ = run(program, image, known, noise, "reference")
        assert torch.equal(images, reference)


def test_lstm_cells_must_be_causal():
    program = lstm_program(Carry.LEFT)
    program.nodes[1].recurrent[0].weight[:, :, 1, 1] = 1.0  # the cell's own current position
    with pytest.raises(ProgramError, match="recurrent taps on its own row must lie left"):
        program.check()
    program = lstm_program(Carry.RIGHT)
    program.nodes[1].recurrent[0].weight[:, :, 1, 0] = 1.0
    with pytest.raises(ProgramError, match="must lie right"):
        program.check()
    program = lstm_program(Carry.ABOVE)
    program.nodes[1].carry = Carry.RIGHT
    with pytest.raises(ProgramError, match="carry RIGHT is for a ROW cell"):
        program.check()


# -- the layout -------------------------------------------------------------------------------------

def test_the_cpp_layout_header_is_generated_from_program_py():
    assert HEADER.read_text() == P.layout_header(), (
        "csrc/common/sample_program_layout.h is out of date: run `python -m tools.gen_program_layout`")


PROGRAMS = model_programs()


@pytest.mark.parametrize("name,program", PROGRAMS, ids=[name for name, _ in PROGRAMS])
def test_every_program_round_trips(name, program):
    program.check(batch=2)
    tensors, ints = program.encode()
    assert SamplingProgram.decode(tensors, ints).describe() == program.describe()


@NOT_BUILT
@pytest.mark.parametrize("name,program", PROGRAMS, ids=[name for name, _ in PROGRAMS])
def test_the_cpp_reader_reads_every_node_as_python_wrote_it(name, program):
    tensors, ints = program.encode()
    assert torch.ops.fastgen.sample_program_describe(tensors, ints) == program.describe()


@NOT_BUILT
@pytest.mark.parametrize("record,a,b", [("term", "top", "left"), ("conv", "act", "residual"),
                                        ("value", "stream", "scale"), ("header", "height", "width")])
def test_an_altered_layout_fails_the_checks(monkeypatch, record, a, b):
    """A field order changed on one side only: the generated header no longer matches, and the
    C++ reader reads the program differently (or refuses it)."""
    program = dict(PROGRAMS)["GatedPixelCNN-1-class"]  # rectangular kernels, residuals, ROW values
    fields = list(P.LAYOUT[record])
    i, j = fields.index(a), fields.index(b)
    fields[i], fields[j] = fields[j], fields[i]
    monkeypatch.setitem(P.LAYOUT, record, tuple(fields))
    assert P.layout_header() != HEADER.read_text()
    tensors, ints = program.encode()
    monkeypatch.undo()
    try:
        described = torch.ops.fastgen.sample_program_describe(tensors, ints)
    except RuntimeError:
        return
    assert described != program.describe()


# -- bad programs -----------------------------------------------------------------------------------

def gated_program():
    model = make(GatedPixelCNN, 1, "class")
    with torch.no_grad():
        return model.sampling_program(model.prepare_cond(torch.tensor([0, 1]), 2))


@pytest.mark.parametrize("change,match", [
    (lambda p: setattr(p.nodes[0].terms[0], "src", 99), "source value 99 does not exist"),
    (lambda p: setattr(p.nodes[0].terms[0], "src", 3), "read before a node makes it"),
    (lambda p: setattr(p.nodes[0].terms[0], "weight", torch.zeros(12, 2, 1, 3)), r"weight must be \(12, 1, kh, kw\)"),
    (lambda p: setattr(p.nodes[0].terms[0], "weight", torch.zeros(12, 1, 3, 3)), "kernel rows below the output row"),
    (lambda p: setattr(p.nodes[0].terms[0], "top", 0), "a ROW output may read a PIXEL value's rows above only"),
    (lambda p: setattr(p.nodes[1].terms[0], "weight", torch.ones(12, 1, 1, 3)), "taps right of the output column"),
    (lambda p: p.nodes.append(p.nodes[-1]), "the last node, and only the last"),
    (lambda p: setattr(p.nodes[2], "out", p.nodes[1].out), "is made twice"),
    (lambda p: setattr(p.nodes[1].cond, "offset", 40), "cond channels"),
    (lambda p: p.conds.__setitem__(0, p.conds[0][:1]), "has 1 rows for a batch of 2"),
    (lambda p: setattr(p.nodes[0].terms[0], "stride", 2), "stride 2 from scale 0 cannot make scale 0"),
], ids=["no-value", "read-before-made", "weight-shape", "rows-below", "row-reads-current", "not-causal",
        "two-draws", "made-twice", "cond-channels", "cond-batch", "stride"])
def test_the_python_check_names_what_is_wrong(change, match):
    program = gated_program()
    change(program)
    with pytest.raises(ProgramError, match=match):
        program.check(batch=2)


@NOT_BUILT
@pytest.mark.parametrize("position,value,match", [
    (0, 2, "layout version 2"), (1, 2, "image_channels must be 1 or 3"), (3, 1 << 20, "image size"),
    (6, -1, "counts"), (9, 0, "value 0 has 0 channels"), ("first-node", 9, "unknown kind 9"),
    ("end", 0, "continue after the last node"), ("cut", 0, "end inside"),
], ids=["version", "channels", "size", "count", "value-channels", "kind", "trailing", "truncated"])
def test_the_cpp_reader_refuses_bad_ints(position, value, match):
    tensors, ints = gated_program().encode()
    ints = list(ints)
    if position == "end":
        ints.append(value)
    elif position == "cut":
        ints = ints[:-1]
    elif position == "first-node":
        ints[len(P.LAYOUT["header"]) + len(P.LAYOUT["value"]) * ints[6]] = value
    else:
        ints[position] = value
    with pytest.raises(RuntimeError, match=match):
        torch.ops.fastgen.sample_program_describe(tensors, ints)


@NOT_BUILT
def test_the_cpp_reader_refuses_bad_tensors():
    program = gated_program()
    tensors, ints = program.encode()
    for index, bad, match in [(0, tensors[0][:6], r"weight must be \(12, 1, 1, 3\)"),
                              (0, tensors[0][..., :1].contiguous(), r"weight must be \(12, 1, 1, 3\), got \[12, 1, 1, 1\]"),
                              (1, tensors[1][:-1], "bias must have shape"),
                              (1, tensors[1][:0], "bias must have shape"),
                              (0, tensors[0].double(), "must be a contiguous"),
                              (0, torch.zeros(12, 1, 1, 6)[..., ::2], "tensor 0 must be a contiguous"),
                              (len(tensors) - 1, tensors[-1][..., :3].contiguous(), "cond channels")]:
        wrong = list(tensors)
        wrong[index] = bad
        with pytest.raises(RuntimeError, match=match):
            torch.ops.fastgen.sample_program_describe(wrong, ints)
    with pytest.raises(RuntimeError, match=r"names \d+ weights and 3 conditioning tensors"):
        torch.ops.fastgen.sample_program_describe(tensors[:-1], ints)


@NOT_BUILT
@pytest.mark.parametrize("op", ["sample_program", "sample_program_block"])
def test_the_sampler_ops_refuse_an_empty_program_and_empty_conds(op):
    """The ops read the program themselves: an empty int list, or a conditioning tensor with no
    rows for the batch, is an error before any memory is read (both once crashed the process)."""
    program = gated_program()
    tensors, ints = program.encode()
    image = torch.zeros(2, 1, program.height, program.width, dtype=torch.long)
    known, noise = torch.zeros_like(image, dtype=torch.bool), torch.rand(image.shape, dtype=torch.float64)
    call = getattr(torch.ops.fastgen, op)
    with pytest.raises(RuntimeError, match="end inside a header"):
        call(tensors, [], image, known, noise, False)
    with pytest.raises(RuntimeError, match="has 0 rows for a batch of 2"):
        call(tensors[:-1] + [tensors[-1][:0]], ints, image, known, noise, False)
    with pytest.raises(RuntimeError, match="end inside a header"):
        torch.ops.fastgen.sample_program_describe(tensors, [])
