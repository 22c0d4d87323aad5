"""The poison fixture itself must work, or every 'unwritten element' check would be vacuous."""
import torch


def test_poison_fills_new_tensors_with_nan(poison):
    assert torch.isnan(torch.empty(64)).all()
    assert torch.isnan(torch.empty_like(torch.zeros(3, 5))).all()


def test_poison_reaches_cpp_allocations(poison):
    # at::empty inside an ATen C++ op: the same path the fastgen kernels allocate through.
    out = torch.ops.aten.empty.memory_format([7, 3])
    assert torch.isnan(out).all()
