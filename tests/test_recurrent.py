"""Recurrent layers (RNNCell, LSTMCell, GRUCell, RNN, LSTM, GRU) against PyTorch: the same weights,
loaded through state dicts, give the same outputs, final states and gradients of every parameter and
input, in float64 to rounding and in float32 to ~1e-5; parameter names, shapes, initialisation,
printing, dropout between layers and the errors for wrong shapes are PyTorch's. Gradients are also
checked against finite differences, and a small LSTM trains the same compiled as eagerly."""
import copy

import numpy as np
import pytest

import fusegrad as fg
from fusegrad import nn

from test_compile import train_step


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


TOLERANCES = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-5, atol=1e-6)}


def _twins(torch, kind, dtype, *args, **kwargs):
    """PyTorch's layer with its own random initialisation, and ours loaded from its state dict."""
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(*args, dtype=getattr(torch, dtype), **kwargs)
    ours = getattr(nn, kind)(*args, dtype=getattr(fg, dtype), **kwargs)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    result = ours.load_state_dict({k: fg.tensor(v.numpy()) for k, v in theirs.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    return theirs, ours


def _map(fn, x):
    """fn on every array of a nested tuple (None stays None)."""
    if isinstance(x, (tuple, list)):
        return tuple(_map(fn, v) for v in x)
    return None if x is None else fn(x)


def _flat(x):
    if isinstance(x, (tuple, list)):
        return [a for v in x for a in _flat(v)]
    return [] if x is None else [x]


def _compare(torch, theirs, ours, args, dtype):
    """Call both layers on the same arguments (nested NumPy arrays), compare every output, then the
    gradients of a random weighting of all outputs with respect to every parameter and argument."""
    tol = TOLERANCES[dtype]
    their_args = _map(lambda a: torch.tensor(a, requires_grad=True), args)
    our_args = _map(lambda a: fg.tensor(a, requires_grad=True), args)
    their_out, our_out = _flat(theirs(*their_args)), _flat(ours(*our_args))
    assert len(their_out) == len(our_out)
    rng = np.random.default_rng(1)
    their_loss, our_loss = 0, 0
    for t, o in zip(their_out, our_out):
        assert tuple(o.shape) == tuple(t.shape) and o.dtype.name == dtype
        np.testing.assert_allclose(o.detach().numpy(), t.detach().numpy(), **tol)
        weight = rng.standard_normal(tuple(t.shape)).astype(dtype)
        their_loss = their_loss + (t * torch.tensor(weight)).sum()
        our_loss = our_loss + (o * fg.tensor(weight)).sum()
    their_loss.backward()
    our_loss.backward()
    their_grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), their_grads[name].grad.numpy(), err_msg=name, **tol)
    for t, o in zip(_flat(their_args), _flat(our_args)):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), **tol)


def _randn(*shape):
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape)


# ---------------------------------------------------------------- against PyTorch

SEQUENCE_CASES = {
    # name: (kind, constructor args, constructor kwargs, forward args as shapes; a tuple of shapes is (h_0, c_0))
    "rnn_tanh_with_h0": ("RNN", (3, 4), {}, [(5, 2, 3), (1, 2, 4)]),
    "rnn_relu_2_layers_bidirectional": ("RNN", (3, 4, 2, "relu"), dict(bidirectional=True), [(5, 2, 3)]),
    "rnn_no_bias_batch_first_unbatched": ("RNN", (3, 4), dict(bias=False, batch_first=True), [(5, 3), (1, 4)]),
    "lstm": ("LSTM", (3, 4), {}, [(5, 2, 3)]),
    "lstm_2_layers_bidirectional_batch_first_with_state":
        ("LSTM", (3, 4, 2), dict(bidirectional=True, batch_first=True), [(2, 5, 3), ((4, 2, 4), (4, 2, 4))]),
    "lstm_unbatched_with_state": ("LSTM", (3, 4, 2), {}, [(5, 3), ((2, 4), (2, 4))]),
    "lstm_no_bias": ("LSTM", (3, 4), dict(bias=False), [(4, 3, 3)]),
    "lstm_proj_2_layers_bidirectional_with_state":
        ("LSTM", (3, 5, 2), dict(proj_size=2, bidirectional=True), [(4, 2, 3), ((4, 2, 2), (4, 2, 5))]),
    "gru_2_layers_batch_first_with_h0": ("GRU", (3, 4, 2), dict(batch_first=True), [(2, 5, 3), (2, 2, 4)]),
    "gru_bidirectional_unbatched_batch_first_with_h0":
        ("GRU", (3, 4, 2), dict(bidirectional=True, batch_first=True), [(5, 3), (4, 4)]),
    "gru_no_bias_unbatched": ("GRU", (3, 4), dict(bias=False), [(5, 3)]),
    "gru_sequence_of_one_step": ("GRU", (3, 4), {}, [(1, 2, 3)]),
}


def _arrays(shapes):
    return [tuple(_randn(*t) for t in s) if isinstance(s[0], tuple) else _randn(*s) for s in shapes]


CELL_CASES = {
    "rnn_cell": ("RNNCell", (3, 4), {}, [(2, 3), (2, 4)]),
    "rnn_cell_relu_no_state": ("RNNCell", (3, 4), dict(nonlinearity="relu"), [(2, 3)]),
    "rnn_cell_unbatched_no_bias": ("RNNCell", (3, 4), dict(bias=False), [(3,), (4,)]),
    "lstm_cell": ("LSTMCell", (3, 4), {}, [(2, 3), ((2, 4), (2, 4))]),
    "lstm_cell_no_state": ("LSTMCell", (3, 4), {}, [(2, 3)]),
    "lstm_cell_unbatched_no_bias": ("LSTMCell", (3, 4), dict(bias=False), [(3,), ((4,), (4,))]),
    "gru_cell": ("GRUCell", (3, 4), {}, [(2, 3), (2, 4)]),
    "gru_cell_unbatched_no_state": ("GRUCell", (3, 4), {}, [(3,)]),
    "gru_cell_no_bias": ("GRUCell", (3, 4), dict(bias=False), [(2, 3), (2, 4)]),
}


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", {**SEQUENCE_CASES, **CELL_CASES})
def test_layers_match_torch(torch, case, dtype):
    kind, args, kwargs, shapes = {**SEQUENCE_CASES, **CELL_CASES}[case]
    theirs, ours = _twins(torch, kind, dtype, *args, **kwargs)
    _compare(torch, theirs, ours, tuple(_map(lambda a: a.astype(dtype), _arrays(shapes))), dtype)


def test_a_cell_unrolled_by_hand_is_the_one_layer_module():
    """LSTMCell stepped over a sequence with LSTM's weights gives LSTM's outputs (same weight layout)."""
    lstm = nn.LSTM(3, 4, dtype=fg.float64)
    cell = nn.LSTMCell(3, 4, dtype=fg.float64)
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    x = fg.tensor(_randn(5, 2, 3))
    output, (h_n, c_n) = lstm(x)
    state = None
    for t in range(5):
        state = cell(x[t], state)
        np.testing.assert_allclose(state[0].detach().numpy(), output[t].detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(state[1].detach().numpy(), c_n[0].detach().numpy(), rtol=1e-12, atol=1e-14)


def test_state_dicts_load_both_ways_through_checkpoints(torch, tmp_path):
    """torch.save'd weights load into ours, and ours, fusegrad.save'd, into PyTorch's: same outputs."""
    theirs = torch.nn.LSTM(3, 4, 2, bidirectional=True)
    ours = nn.LSTM(3, 4, 2, bidirectional=True)
    torch.save(theirs.state_dict(), tmp_path / "theirs.pt")
    ours.load_state_dict(fg.load(tmp_path / "theirs.pt"))
    x = _randn(5, 2, 3).astype(np.float32)
    np.testing.assert_allclose(ours(fg.tensor(x))[0].detach().numpy(),
                               theirs(torch.tensor(x))[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    ours = nn.GRU(3, 4, 2, bias=False)
    theirs = torch.nn.GRU(3, 4, 2, bias=False)
    fg.save(ours.state_dict(), tmp_path / "ours.pt")
    theirs.load_state_dict(torch.load(tmp_path / "ours.pt"))
    h_ours, h_theirs = ours(fg.tensor(x))[1], theirs(torch.tensor(x))[1]
    np.testing.assert_allclose(h_ours.detach().numpy(), h_theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- parameters, initialisation, printing

@pytest.mark.parametrize("kind,args,kwargs", [
    ("RNN", (3, 16), dict(num_layers=2, bidirectional=True)),
    ("LSTM", (3, 16), dict(proj_size=4, bias=False, num_layers=2)),
    ("GRU", (5, 16), {}),
    ("LSTMCell", (3, 16), {}),
    ("GRUCell", (3, 16), dict(bias=False)),
    ("RNNCell", (3, 16), dict(nonlinearity="relu")),
])
def test_parameters_and_initialisation_are_torchs(torch, kind, args, kwargs):
    ours = getattr(nn, kind)(*args, **kwargs)
    theirs = getattr(torch.nn, kind)(*args, **kwargs)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == \
        [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    bound = 1 / np.sqrt(16)
    values = np.concatenate([p.detach().numpy().ravel() for p in ours.parameters()])
    assert values.dtype == np.float32 and np.abs(values).max() <= bound
    # uniform over the whole interval: both ends are reached and the mean is near 0
    assert values.min() < -0.95 * bound and values.max() > 0.95 * bound and abs(values.mean()) < 0.1 * bound
    assert repr(ours) == repr(theirs)
    if not kind.endswith("Cell"):
        assert [[tuple(w.shape) for w in ws] for ws in ours.all_weights] == \
            [[tuple(w.shape) for w in ws] for ws in theirs.all_weights]


def test_reprs_match_torch(torch):
    for kind, args, kwargs in [("RNN", (3, 4, 2, "relu"), dict(bias=False, batch_first=True, dropout=0.5,
                                                                 bidirectional=True)),
                               ("LSTM", (3, 4), dict(proj_size=2)), ("GRU", (3, 4), dict(dropout=0.25,
                                                                                           num_layers=3)),
                               ("RNNCell", (3, 4, False, "relu"), {}), ("LSTMCell", (3, 4), {}),
                               ("GRUCell", (3, 4), dict(bias=False))]:
        assert repr(getattr(nn, kind)(*args, **kwargs)) == repr(getattr(torch.nn, kind)(*args, **kwargs))


def test_module_double_and_flatten_parameters(torch):
    """.double() converts every weight; flatten_parameters() is accepted and changes nothing."""
    theirs, ours = _twins(torch, "GRU", "float32", 3, 4, 2)
    theirs.double()
    ours.double().flatten_parameters()
    assert all(p.dtype == fg.float64 for p in ours.parameters())
    _compare(torch, theirs, ours, (_randn(5, 2, 3),), "float64")


# ---------------------------------------------------------------- dropout between layers

def test_dropout_between_layers_is_off_in_eval_mode(torch):
    theirs, ours = _twins(torch, "LSTM", "float64", 3, 4, 3, dropout=0.5, bidirectional=True)
    theirs.eval()
    ours.eval()
    _compare(torch, theirs, ours, (_randn(5, 2, 3),), "float64")
    x = fg.tensor(_randn(5, 2, 3))
    np.testing.assert_array_equal(ours(x)[0].detach().numpy(), ours(x)[0].detach().numpy())


def test_dropout_between_layers_in_training(torch):
    x = _randn(5, 2, 3)
    # dropout=1 zeroes every layer's output but the last: deterministic, so PyTorch's values compare
    theirs, ours = _twins(torch, "GRU", "float64", 3, 4, 3, dropout=1.0)
    _compare(torch, theirs, ours, (x,), "float64")
    # the last layer's output is not dropped: with one layer, dropout changes nothing
    with pytest.warns(UserWarning, match="^dropout option adds dropout after all but last recurrent layer, so "
                                         "non-zero dropout expects num_layers greater than 1, but got "
                                         "dropout=0.5 and num_layers=1$"):
        theirs, ours = _twins(torch, "LSTM", "float64", 3, 4, dropout=0.5)
    _compare(torch, theirs, ours, (x,), "float64")
    # a random mask in training: two calls differ, and in eval mode they are PyTorch's again
    theirs, ours = _twins(torch, "RNN", "float64", 3, 4, 2, dropout=0.5)
    out1, out2 = (ours(fg.tensor(x))[0].detach().numpy() for _ in range(2))
    assert not np.allclose(out1, out2)
    theirs.eval()
    ours.eval()
    np.testing.assert_allclose(ours(fg.tensor(x))[0].detach().numpy(),
                               theirs(torch.tensor(x))[0].detach().numpy(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- errors

def _layers(ns):
    return {"rnn": ns.nn.RNN(3, 4), "lstm": ns.nn.LSTM(3, 4, 2), "gru": ns.nn.GRU(3, 4, 2),
            "proj": ns.nn.LSTM(3, 4, proj_size=2), "rnn_cell": ns.nn.RNNCell(3, 4), "lstm_cell": ns.nn.LSTMCell(3, 4),
            "gru_cell": ns.nn.GRUCell(3, 4), "bad_cell": ns.nn.RNNCell(3, 4, nonlinearity="foo")}


# (layer, input shape, hidden shapes or None, exception type, whether our message is PyTorch's)
ERROR_CASES = {
    "rnn_1d_input": ("rnn", (3,), None, ValueError, True),
    "lstm_4d_input": ("lstm", (1, 2, 3, 3), None, ValueError, True),
    "gru_4d_input": ("gru", (5, 2, 3, 1), None, ValueError, True),
    "lstm_wrong_input_size": ("lstm", (5, 2, 4), None, RuntimeError, True),
    "gru_wrong_input_size_unbatched": ("gru", (5, 4), None, RuntimeError, True),
    "rnn_wrong_hidden_shape": ("rnn", (5, 2, 3), (2, 2, 4), RuntimeError, True),
    "gru_wrong_hidden_batch": ("gru", (5, 2, 3), (2, 3, 4), RuntimeError, True),
    "gru_2d_hidden_for_batched_input": ("gru", (5, 2, 3), (2, 4), RuntimeError, True),
    "rnn_3d_hidden_for_unbatched_input": ("rnn", (5, 3), (1, 1, 4), RuntimeError, True),
    "lstm_wrong_h_size": ("lstm", (5, 2, 3), ((2, 2, 5), (2, 2, 4)), RuntimeError, True),
    "lstm_wrong_c_size": ("lstm", (5, 2, 3), ((2, 2, 4), (2, 3, 4)), RuntimeError, True),
    "lstm_2d_state_for_batched_input": ("lstm", (5, 2, 3), ((2, 4), (2, 4)), RuntimeError, True),
    "lstm_3d_state_for_unbatched_input": ("lstm", (5, 3), ((2, 1, 4), (2, 1, 4)), RuntimeError, True),
    "lstm_proj_h_of_hidden_size": ("proj", (5, 2, 3), ((1, 2, 4), (1, 2, 4)), RuntimeError, True),
    "lstm_empty_sequence": ("lstm", (0, 2, 3), None, RuntimeError, True),
    "gru_empty_sequence": ("gru", (0, 2, 3), None, RuntimeError, True),
    "cell_3d_input": ("rnn_cell", (2, 3, 3), None, ValueError, True),
    "cell_3d_hidden": ("gru_cell", (2, 3), (1, 2, 4), ValueError, True),
    "lstm_cell_3d_c": ("lstm_cell", (2, 3), ((2, 4), (2, 4, 1)), ValueError, True),
    "cell_wrong_input_size": ("rnn_cell", (2, 5), None, RuntimeError, True),
    "gru_cell_wrong_input_size": ("gru_cell", (2, 5), None, RuntimeError, True),
    "cell_hidden_batch": ("rnn_cell", (2, 3), (3, 4), RuntimeError, True),
    "cell_hidden_size": ("rnn_cell", (2, 3), (2, 5), RuntimeError, True),
    "cell_unbatched_input_batched_hidden": ("rnn_cell", (3,), (1, 4), RuntimeError, True),
    "cell_batched_input_unbatched_hidden": ("gru_cell", (2, 3), (4,), RuntimeError, True),
    "cell_batched_input_unbatched_hidden_of_batch_size": ("rnn_cell", (4, 3), (4,), IndexError, False),
    "lstm_cell_c_size": ("lstm_cell", (2, 3), ((2, 4), (2, 5)), RuntimeError, True),
    "lstm_cell_c_batch": ("lstm_cell", (2, 3), ((2, 4), (3, 4)), RuntimeError, True),
    "cell_unknown_nonlinearity": ("bad_cell", (2, 3), None, RuntimeError, True),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_for_wrong_shapes_match_torch(torch, case):
    layer, input_shape, hidden_shapes, error, same_message = ERROR_CASES[case]
    messages = []
    for ns in (torch, fg):
        module = _layers(ns)[layer]
        args = [ns.zeros(*input_shape)]
        if hidden_shapes is not None:
            args.append(tuple(ns.zeros(*s) for s in hidden_shapes) if isinstance(hidden_shapes[0], tuple)
                        else ns.zeros(*hidden_shapes))
        with pytest.raises(error) as info:
            module(*args)
        messages.append(str(info.value))
    if same_message:
        assert messages[1] == messages[0]


def test_dtype_mismatches_are_errors_as_in_torch(torch):
    for ns in (torch, fg):
        with pytest.raises(ValueError, match=r"^RNN input dtype \(torch.float64\) does not match weight dtype "
                                             r"\(torch.float32\). Convert input: input.to\(torch.float32\), or "
                                             r"convert model: model.to\(torch.float64\)$"):
            ns.nn.LSTM(3, 4)(ns.zeros(5, 2, 3, dtype=ns.float64))
        with pytest.raises(RuntimeError, match="^mat1 and mat2 must have the same dtype"):
            ns.nn.GRU(3, 4)(ns.zeros(5, 2, 3), ns.zeros(1, 2, 4, dtype=ns.float64))
        with pytest.raises(RuntimeError, match="^mat1 and mat2 must have the same dtype"):
            ns.nn.LSTMCell(3, 4)(ns.zeros(2, 3, dtype=ns.float64))


@pytest.mark.parametrize("make,error,message", [
    (lambda ns: ns.nn.LSTM(3, 4, dropout=1.5), ValueError,
     "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"),
    (lambda ns: ns.nn.GRU(3, 4, dropout=True), ValueError,
     "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"),
    (lambda ns: ns.nn.LSTM(3, 0), ValueError, "hidden_size must be greater than zero"),
    (lambda ns: ns.nn.LSTM(0, 4), ValueError, "input_size must be greater than zero"),
    (lambda ns: ns.nn.GRU(3, 4.0), TypeError, "hidden_size should be of type int, got: float"),
    (lambda ns: ns.nn.RNN(3.0, 4), TypeError, "input_size should be of type int, got: float"),
    (lambda ns: ns.nn.LSTM(3, 4, bias=1), TypeError, "bias should be of type bool, got: int"),
    (lambda ns: ns.nn.LSTM(3, 4, batch_first=None), TypeError, "batch_first should be of type bool, got: NoneType"),
    (lambda ns: ns.nn.LSTM(3, 4, 0), ValueError, "num_layers must be greater than zero"),
    (lambda ns: ns.nn.LSTM(3, 4, proj_size=4), ValueError, "proj_size has to be smaller than hidden_size"),
    (lambda ns: ns.nn.LSTM(3, 4, proj_size=-1), ValueError,
     "proj_size should be a positive integer or zero to disable projections"),
    (lambda ns: ns.nn.RNN(3, 4, proj_size=2), ValueError,
     "proj_size argument is only supported for LSTM, not RNN or GRU"),
    (lambda ns: ns.nn.GRU(3, 4, proj_size=2), ValueError,
     "proj_size argument is only supported for LSTM, not RNN or GRU"),
    (lambda ns: ns.nn.RNN(3, 4, 1, "sigmoid"), ValueError,
     "Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'."),
])
def test_constructor_errors_match_torch(torch, make, error, message):
    for ns in (torch, fg):
        with pytest.raises(error) as info:
            make(ns)
        assert str(info.value) == message


def test_an_empty_batch_gives_empty_outputs_as_in_torch(torch):
    theirs, ours = _twins(torch, "LSTM", "float64", 3, 4, 2, bidirectional=True)
    their_out, (their_h, _) = theirs(torch.zeros(5, 0, 3, dtype=torch.float64))
    our_out, (our_h, _) = ours(fg.zeros(5, 0, 3, dtype=fg.float64))
    assert tuple(our_out.shape) == tuple(their_out.shape) == (5, 0, 8)
    assert tuple(our_h.shape) == tuple(their_h.shape) == (4, 0, 4)


def test_packed_sequences_are_not_supported():
    with pytest.raises(AttributeError, match="fusegrad does not implement torch.nn.utils.rnn yet"):
        nn.utils.rnn.pack_padded_sequence


# ---------------------------------------------------------------- finite differences

def _gradcheck_module(module, *inputs):
    """gradcheck of module(*inputs) with respect to the inputs and every parameter: the parameters are
    swapped for gradcheck's (perturbed) tensors during each call."""
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    flat = _flat(inputs)

    def call(*tensors):
        saved = dict(module._parameters)
        module._parameters.update(zip(names, tensors[len(flat):]))
        try:
            rebuilt, k = [], 0
            for x in inputs:
                n = len(_flat(x))
                rebuilt.append(tuple(tensors[k:k + n]) if isinstance(x, tuple) else tensors[k])
                k += n
            return tuple(_flat(module(*rebuilt)))
        finally:
            module._parameters.update(saved)

    return fg.autograd.gradcheck(call, tuple(flat) + tuple(params))


def _leaf(*shape):
    return fg.tensor(_randn(*shape), requires_grad=True)


@pytest.mark.parametrize("make,inputs", [
    (lambda: nn.RNNCell(2, 3, dtype=fg.float64), lambda: (_leaf(2, 2), _leaf(2, 3))),
    (lambda: nn.LSTMCell(2, 3, dtype=fg.float64), lambda: (_leaf(2, 2), (_leaf(2, 3), _leaf(2, 3)))),
    (lambda: nn.GRUCell(2, 3, dtype=fg.float64), lambda: (_leaf(2, 2), _leaf(2, 3))),
])
def test_cell_gradients_match_finite_differences(make, inputs):
    assert _gradcheck_module(make(), *inputs())


def test_bidirectional_gru_gradients_match_finite_differences():
    assert _gradcheck_module(nn.GRU(2, 2, bidirectional=True, dtype=fg.float64), _leaf(3, 1, 2), _leaf(2, 1, 2))


# ---------------------------------------------------------------- compiled training

class SequenceRegressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 8, batch_first=True)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        output, (h_n, c_n) = self.lstm(x)
        return self.head(output[:, -1]) + c_n[0].sum(1, keepdim=True)


def test_lstm_trains_the_same_compiled_as_eagerly():
    fg.manual_seed(0)
    model = SequenceRegressor()
    twin = copy.deepcopy(model)
    opt = fg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin_opt = fg.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    initial = [p.detach().numpy().copy() for p in model.parameters()]
    step = fg.compile(train_step)
    loss_fn = nn.MSELoss()
    rng = np.random.default_rng(0)
    for _ in range(6):
        x = fg.tensor(rng.standard_normal((4, 5, 3)).astype(np.float32))
        y = fg.tensor(rng.standard_normal((4, 1)).astype(np.float32))
        expected = train_step(model, opt, loss_fn, x, y)
        got = step(twin, twin_opt, loss_fn, x, y)
        np.testing.assert_allclose(got.item(), expected.item(), rtol=1e-5)
        for (name, p), q in zip(model.named_parameters(), twin.parameters()):
            np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    assert step.replays >= 3 and len(step.specialisations) == 1
    assert all(not np.allclose(p.detach().numpy(), p0) for p, p0 in zip(twin.parameters(), initial))
