"""BatchGroupedConv2d (interir_plugin/archs/econv.py) is nn.Conv2d: same state dict, outputs and gradients."""
import pytest
import torch

from interir_plugin.archs.econv import BatchGroupedConv2d


@pytest.mark.parametrize('threads', [1, 2])
@pytest.mark.parametrize('kwargs', [dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=1, bias=False),
                                    dict(kernel_size=5, stride=2, padding=2), dict(kernel_size=1)])
def test_batch_grouped_conv_equals_conv2d(threads, kwargs):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        conv = torch.nn.Conv2d(6, 4, **kwargs)
        grouped = BatchGroupedConv2d(6, 4, **kwargs)
        grouped.load_state_dict(conv.state_dict())  # same keys and shapes
        for batch in (1, 3):
            x = torch.randn(batch, 6, 11, 13, requires_grad=True)
            y, y_ref = grouped(x), conv(x)
            torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-5)
            g = torch.randn_like(y)
            grads = torch.autograd.grad(y, [x, *grouped.parameters()], g)
            grads_ref = torch.autograd.grad(y_ref, [x, *conv.parameters()], g)
            for a, b in zip(grads, grads_ref):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(before)
