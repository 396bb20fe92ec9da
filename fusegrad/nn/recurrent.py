"""Recurrent layers: RNNCell, LSTMCell, GRUCell and the multi-layer RNN, LSTM and GRU, with PyTorch's
arguments, parameter names, shapes and gate order, initialisation, forward signatures, return values
and errors.

They are composites of linear, sigmoid, tanh, relu, chunk and stack, so gradients and compiled steps
need nothing of their own: the time loop runs in Python, and a compiled step traces it unrolled. The
input-to-hidden products of a whole sequence are one matmul per layer and direction; only the
hidden-to-hidden product is taken step by step. Packed sequences (torch.nn.utils.rnn) are not
supported."""
import math
import numbers
import warnings

import fusegrad as fg

from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


# ---------------------------------------------------------------- one time step
# Each takes gi = linear(x_t, weight_ih, bias_ih) for the batch (N, gates) and the state of the
# previous step, and returns the next state, computed in the order PyTorch's CPU cells compute it.

def _rnn_step(activation):
    def step(gi, h, w_hh, b_hh):
        return activation(F.linear(h, w_hh, b_hh) + gi)
    return step


def _lstm_step(gi, state, w_hh, b_hh, w_hr=None):
    h, c = state
    i, f, g, o = (F.linear(h, w_hh, b_hh) + gi).chunk(4, 1)
    c = fg.sigmoid(f) * c + fg.sigmoid(i) * fg.tanh(g)
    h = fg.sigmoid(o) * fg.tanh(c)
    return (h if w_hr is None else F.linear(h, w_hr)), c


def _gru_step(gi, h, w_hh, b_hh):
    # PyTorch's formula: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h
    i_r, i_z, i_n = gi.chunk(3, 1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
    r = fg.sigmoid(h_r + i_r)
    z = fg.sigmoid(h_z + i_z)
    n = fg.tanh(i_n + r * h_n)
    return (h - n) * z + n


_STEPS = {"RNN_TANH": _rnn_step(fg.tanh), "RNN_RELU": _rnn_step(fg.relu), "LSTM": _lstm_step, "GRU": _gru_step}
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _rnn_mode(nonlinearity):
    if nonlinearity == "tanh":
        return "RNN_TANH"
    if nonlinearity == "relu":
        return "RNN_RELU"
    raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")


def _reset_uniform(module):
    """PyTorch's initialisation of recurrent layers: every parameter uniform in ±1/sqrt(hidden_size)."""
    stdv = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size > 0 else 0
    for weight in module.parameters():
        init.uniform_(weight, -stdv, stdv)


def _repr_args(module, names):
    """'input_size, hidden_size' then `name=value` for each (name, default) that differs from its default."""
    s = f"{module.input_size}, {module.hidden_size}"
    for name, default in names:
        value = module.__dict__.get(name, default)
        if value != default or type(value) is not type(default):
            s += f", {name}={value}"
    return s


# ---------------------------------------------------------------- cells

class RNNCellBase(Module):
    """weight_ih (gates * hidden_size, input_size), weight_hh (gates * hidden_size, hidden_size) and
    the biases bias_ih and bias_hh (gates * hidden_size), gates stacked in PyTorch's order."""

    def __init__(self, input_size, hidden_size, bias, num_chunks, device=None, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        gates = num_chunks * hidden_size
        self.weight_ih = Parameter(fg.empty(gates, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(fg.empty(gates, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(fg.empty(gates, dtype=dtype, device=device))
            self.bias_hh = Parameter(fg.empty(gates, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def extra_repr(self):
        return _repr_args(self, [("bias", True), ("nonlinearity", "tanh")])

    def _check_dims(self, input, hiddens, labels):
        name = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        for h, label in zip(hiddens, labels):
            if h is not None and h.dim() not in (1, 2):
                raise ValueError(f"{name}: Expected {label} to be 1D or 2D, got {h.dim()}D instead")

    def _step(self, input, hiddens, mode):
        """The cell on a batch: input (N, input_size), hiddens batched as the input is (an unbatched
        input and hidden state gain a batch dimension of 1 here and lose it on the way out)."""
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
            hiddens = [h.unsqueeze(0) for h in hiddens]
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for k, h in enumerate(hiddens):
            if input.size(0) != h.size(0):
                raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{k} batch size "
                                   f"{h.size(0)}")
            if h.size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{k} has inconsistent hidden_size: got {h.size(1)}, expected "
                                   f"{self.hidden_size}")
        gi = F.linear(input, self.weight_ih, self.bias_ih)
        state = hiddens[0] if len(hiddens) == 1 else tuple(hiddens)
        out = _STEPS[mode](gi, state, self.weight_hh, self.bias_hh)
        if batched:
            return out
        return tuple(t.squeeze(0) for t in out) if isinstance(out, tuple) else out.squeeze(0)

    def _zeros(self, input):
        batch = (input.size(0),) if input.dim() == 2 else ()
        return fg.zeros(*batch, self.hidden_size, dtype=input.dtype, device=input.device)


class RNNCell(RNNCellBase):
    """h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), or relu with nonlinearity='relu'."""

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=1, device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        self._check_dims(input, [hx], ["hidden"])
        if self.nonlinearity not in ("tanh", "relu"):   # checked here, not in __init__, as PyTorch does
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return self._step(input, [self._zeros(input) if hx is None else hx], _rnn_mode(self.nonlinearity))


class LSTMCell(RNNCellBase):
    """(h', c') from (h, c); gates i, f, g, o in that order in the weights' rows."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=4, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        self._check_dims(input, [] if hx is None else list(hx), ["hx[0]", "hx[1]"])
        if hx is None:
            zeros = self._zeros(input)
            hx = (zeros, zeros)
        return self._step(input, [hx[0], hx[1]], "LSTM")


class GRUCell(RNNCellBase):
    """h' from h; gates r, z, n in that order in the weights' rows."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__(input_size, hidden_size, bias, num_chunks=3, device=device, dtype=dtype)

    def forward(self, input, hx=None):
        self._check_dims(input, [hx], ["hidden"])
        return self._step(input, [self._zeros(input) if hx is None else hx], "GRU")


# ---------------------------------------------------------------- multi-layer, over sequences

class RNNBase(Module):
    """num_layers stacked recurrent layers, each in one or two directions, over a sequence
    (L, N, input_size), or (N, L, input_size) with batch_first, or unbatched (L, input_size).
    Layer k's parameters are weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and
    weight_hr_l{k} for an LSTM with proj_size), with the suffix _reverse for the backward
    direction. In training, dropout applies to the outputs of every layer but the last."""

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=3)
        for name, value in (("bias", bias), ("batch_first", batch_first), ("input_size", input_size),
                            ("hidden_size", hidden_size)):
            kind = bool if name in ("bias", "batch_first") else int
            if not isinstance(value, kind):
                raise TypeError(f"{name} should be of type {kind.__name__}, got: {type(value).__name__}")
            if kind is int and value <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in _GATES:
            raise ValueError("Unrecognized RNN mode: " + mode)
        self.mode, self.input_size, self.hidden_size, self.num_layers = mode, input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.proj_size = bidirectional, proj_size
        gates = _GATES[mode] * hidden_size
        real_hidden = proj_size if proj_size > 0 else hidden_size
        directions = 2 if bidirectional else 1
        self._flat_weights_names, self._all_weights = [], []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else real_hidden * directions
            for direction in range(directions):
                suffix = "_reverse" if direction == 1 else ""
                shapes = [("weight_ih", (gates, layer_input)), ("weight_hh", (gates, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gates,)), ("bias_hh", (gates,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for kind, shape in shapes:
                    names.append(f"{kind}_l{layer}{suffix}")
                    setattr(self, names[-1], Parameter(fg.empty(*shape, dtype=dtype, device=device)))
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self)

    def flatten_parameters(self):
        """A no-op, as in PyTorch off cuDNN: the weights are kept as separate parameters."""

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self):
        return [getattr(self, name) for name in self._flat_weights_names]

    def extra_repr(self):
        return _repr_args(self, [("proj_size", 0), ("num_layers", 1), ("bias", True), ("batch_first", False),
                                 ("dropout", 0.0), ("bidirectional", False)])

    # ------------------------------------------------------------ checks, as PyTorch makes them
    def _num_directions(self):
        return 2 if self.bidirectional else 1

    def _expected_hidden_size(self, input, size):
        batch = input.size(0) if self.batch_first else input.size(1)
        return (self.num_layers * self._num_directions(), batch, size)

    def _check_input(self, input):
        weight_dtype = self.weight_ih_l0.dtype
        if input.dtype != weight_dtype:
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight_dtype}). "
                             f"Convert input: input.to({weight_dtype}), or convert model: model.to({input.dtype})")
        if input.size(-1) != self.input_size:
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")

    @staticmethod
    def _check_hidden_size(hx, expected, msg="Expected hidden size {}, got {}"):
        if tuple(hx.shape) != expected:
            raise RuntimeError(msg.format(expected, list(hx.shape)))

    def _batched(self, input):
        """(input with a batch dimension, whether it had one), after the checks of its rank."""
        if input.dim() not in (2, 3):
            tensor = " tensor" if self.mode.startswith("RNN") else ""
            name = "RNN" if self.mode.startswith("RNN") else self.mode
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D{tensor} instead")
        batched = input.dim() == 3
        return (input if batched else input.unsqueeze(0 if self.batch_first else 1)), batched

    def _initial(self, input, hx):
        """Checks hx (a tensor, unbatched as the input is, or None) and returns it batched."""
        input, batched = self._batched(input)
        if hx is not None:
            if hx.dim() != (3 if batched else 2):
                which = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {which} input, hx should also be {3 if batched else 2}-D but got "
                                   f"{hx.dim()}-D tensor")
            if not batched:
                hx = hx.unsqueeze(1)
        self._check_input(input)
        expected = self._expected_hidden_size(input, self.hidden_size)
        if hx is None:
            hx = fg.zeros(*expected, dtype=input.dtype, device=input.device)
        self._check_hidden_size(hx, expected)
        return input, batched, hx

    # ------------------------------------------------------------ the layers
    def _run(self, input, states):
        """input batched (time-major unless batch_first), states a list over hidden tensors (h, or h
        and c) of (num_layers * num_directions, N, size) tensors. Returns the output and the list of
        final states, stacked like `states`."""
        if self.batch_first:
            input = input.transpose(0, 1)
        if input.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        step = _STEPS[self.mode]
        directions = self._num_directions()
        initial = [s.unbind(0) for s in states]
        finals = []
        layer_input = input
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                weights = self.all_weights[index]
                w_ih, w_hh = weights[0], weights[1]
                b_ih, b_hh = (weights[2], weights[3]) if self.bias else (None, None)
                extra = (weights[-1],) if self.proj_size > 0 else ()
                gi = F.linear(layer_input, w_ih, b_ih).unbind(0)
                order = range(len(gi) - 1, -1, -1) if direction == 1 else range(len(gi))
                state = initial[0][index] if len(initial) == 1 else tuple(s[index] for s in initial)
                hs = [None] * len(gi)
                for t in order:
                    state = step(gi[t], state, w_hh, b_hh, *extra)
                    hs[t] = state[0] if isinstance(state, tuple) else state
                outputs.append(fg.stack(hs, 0))
                finals.append(state if isinstance(state, tuple) else (state,))
            layer_input = outputs[0] if directions == 1 else fg.cat(outputs, 2)
            if layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
        output = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return output, [fg.stack([f[k] for f in finals], 0) for k in range(len(states))]

    def _forward(self, input, hx):
        """forward of RNN and GRU: one hidden tensor."""
        input, batched, hx = self._initial(input, hx)
        output, (h_n,) = self._run(input, [hx])
        if not batched:
            return output.squeeze(0 if self.batch_first else 1), h_n.squeeze(1)
        return output, h_n


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), or relu with nonlinearity='relu'.
    Arguments as PyTorch's: (input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, device=None, dtype=None)."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            nonlinearity = kwargs.pop("nonlinearity", "tanh")
        mode = _rnn_mode(nonlinearity)
        super().__init__(mode, *args, **kwargs)
        self.nonlinearity = nonlinearity

    def forward(self, input, hx=None):
        return self._forward(input, hx)


class GRU(RNNBase):
    """Multi-layer gated recurrent unit; gates r, z, n in that order in the weights' rows."""

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input, hx=None):
        return self._forward(input, hx)


class LSTM(RNNBase):
    """Multi-layer long short-term memory; gates i, f, g, o in that order in the weights' rows.
    forward(input, (h_0, c_0)) returns (output, (h_n, c_n)); with proj_size > 0, h is projected
    by weight_hr to proj_size features."""

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input, hx=None):
        input, batched = self._batched(input)
        real_hidden = self.proj_size if self.proj_size > 0 else self.hidden_size
        if hx is not None:
            h, c = hx[0], hx[1]
            if h.dim() != (3 if batched else 2) or c.dim() != (3 if batched else 2):
                which = "batched 3-D" if batched else "unbatched 2-D"
                raise RuntimeError(f"For {which} input, hx and cx should also be {3 if batched else 2}-D but got "
                                   f"({h.dim()}-D, {c.dim()}-D) tensors")
            if not batched:
                h, c = h.unsqueeze(1), c.unsqueeze(1)
        self._check_input(input)
        expected_h = self._expected_hidden_size(input, real_hidden)
        expected_c = self._expected_hidden_size(input, self.hidden_size)
        if hx is None:
            h = fg.zeros(*expected_h, dtype=input.dtype, device=input.device)
            c = fg.zeros(*expected_c, dtype=input.dtype, device=input.device)
        self._check_hidden_size(h, expected_h, "Expected hidden[0] size {}, got {}")
        self._check_hidden_size(c, expected_c, "Expected hidden[1] size {}, got {}")
        output, (h_n, c_n) = self._run(input, [h, c])
        if not batched:
            return output.squeeze(0 if self.batch_first else 1), (h_n.squeeze(1), c_n.squeeze(1))
        return output, (h_n, c_n)
