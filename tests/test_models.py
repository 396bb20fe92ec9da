"""fusegrad.models: resnet18 has torchvision's architecture and parameter names, loads a PyTorch
state dict, and computes the same outputs and gradients as PyTorch for the same weights."""
import numpy as np
import pytest

import fusegrad


def _torch_resnet18(torch):
    from benchmarks.torch_resnet import resnet18
    return resnet18()


def test_resnet_architectures():
    model = fusegrad.models.resnet18()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 62 and sum(p.numel() for p in model.parameters()) == 11689512
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer2.0.downsample.0.weight" in names and names[-2:] == ["fc.weight", "fc.bias"]
    assert len(model.state_dict()) == 122   # + running_mean, running_var, num_batches_tracked per BatchNorm
    assert repr(model.layer1[0]).startswith("BasicBlock(\n  (conv1): Conv2d(64, 64, kernel_size=(3, 3), stride=(1, 1), "
                                            "padding=(1, 1), bias=False)\n  (bn1): BatchNorm2d(64, eps=1e-05")
    assert sum(p.numel() for p in fusegrad.models.resnet34().parameters()) == 21797672
    with pytest.raises(ValueError, match="fusegrad does not download pretrained weights"):
        fusegrad.models.resnet18(weights="DEFAULT")


def test_resnet18_forward_and_gradients_match_torch(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = _torch_resnet18(torch).double()
    # move the running statistics away from 0 / 1 so that eval mode checks them
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    torch.save(theirs.state_dict(), tmp_path / "resnet18.pth")

    ours = fusegrad.models.resnet18().double()
    result = ours.load_state_dict(fusegrad.load(tmp_path / "resnet18.pth"))
    assert result.missing_keys == [] and result.unexpected_keys == []

    x = np.random.default_rng(0).random((2, 3, 32, 32))   # 1 x 1 planes after layer4
    seed = np.random.default_rng(1).standard_normal((2, 1000))
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        out_ours, out_theirs = ours(fusegrad.tensor(x)), theirs(torch.tensor(x))
        np.testing.assert_allclose(out_ours.detach().numpy(), out_theirs.detach().numpy(), rtol=1e-9, atol=1e-10)
        ours.zero_grad()
        theirs.zero_grad()
        (out_ours * fusegrad.tensor(seed)).sum().backward()
        (out_theirs * torch.tensor(seed)).sum().backward()
        grads_theirs = dict(theirs.named_parameters())
        # elements are compared against the scale of the whole gradient: in training mode the BatchNorm
        # over layer4's two values per channel makes gradients of 1e4 next to ones of 1e-1
        for name, p in ours.named_parameters():
            want = grads_theirs[name].grad.numpy()
            np.testing.assert_allclose(p.grad.numpy(), want, rtol=1e-7, atol=1e-10 * np.abs(want).max(),
                                       err_msg=f"{mode}: {name}")
    # the training-mode pass updated the running statistics as torch's did
    buffers_theirs = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        np.testing.assert_allclose(b.numpy(), buffers_theirs[name].numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
