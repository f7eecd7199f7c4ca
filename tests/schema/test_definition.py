from __future__ import annotations

import pytest
import torch

from fib_runtime.errors import SchemaError, ShapeError
from fib_runtime.schema import AxisConst, AxisVar, Definition
from tests.factories import definition


def test_parses_and_dumps_back_exactly() -> None:
    data = definition()
    parsed = Definition.from_dict(data)
    assert isinstance(parsed.axes["batch_size"], AxisVar)
    assert parsed.axes["hidden_size"] == AxisConst(8)
    assert parsed.to_dict() == data


def test_unknown_fields_are_kept_and_written_back() -> None:
    data = definition(future_field={"a": 1})
    data["axes"]["batch_size"]["unit"] = "rows"
    data["inputs"]["x"]["layout"] = "row-major"
    assert Definition.from_dict(data).to_dict() == data


@pytest.mark.parametrize(("mutate", "field", "needle"), [
    (lambda d: d["inputs"]["x"].update(shape=["batch_size", "hiden"]), "inputs.x.shape[1]",
     "unknown axis 'hiden'"),
    (lambda d: d["outputs"].update(x={"shape": None, "dtype": "float32"}), "outputs",
     "also used by inputs: x"),
    (lambda d: d.update(reference="def run(:\n"), "reference", "does not parse"),
    (lambda d: d.update(reference="def other(x):\n    return x\n"), "reference",
     "top-level function 'run'"),
    (lambda d: d.update(constraints=["batch_size >"]), "constraints[0]", "not a Python"),
    (lambda d: d["axes"].update(batch_size={"type": "dynamic"}), "axes.batch_size.type",
     "'const' or 'var'"),
    (lambda d: d["axes"]["hidden_size"].update(value="8"), "axes.hidden_size.value",
     "expected integer"),
    (lambda d: d["inputs"]["x"].update(dtype="float64"), "inputs.x.dtype", "unknown dtype"),
    (lambda d: d.pop("op_type"), "op_type", "required field is missing"),
    (lambda d: d["inputs"]["x"].pop("shape"), "inputs.x.shape", "required field"),
])
def test_invalid_definitions_name_the_field(mutate, field: str, needle: str) -> None:
    data = definition()
    mutate(data)
    with pytest.raises(SchemaError) as info:
        Definition.from_dict(data)
    assert info.value.field == field
    assert needle in str(info.value)


def test_axis_helpers() -> None:
    d = Definition.from_dict(definition())
    assert d.var_axes == ("batch_size",)
    assert d.const_axes == {"hidden_size": 8}
    binding = d.axis_bindings()["batch_size"]
    assert (binding.input, binding.arg, binding.dim) == ("x", 0, 0)
    axes = d.axes_from_inputs([torch.zeros(5, 8), torch.zeros(8)])
    assert axes == {"batch_size": 5, "hidden_size": 8}
    assert d.output_shapes({"batch_size": 5}) == {"y": (5, 8)}


def test_axes_from_inputs_checks_consistency() -> None:
    d = Definition.from_dict(definition())
    with pytest.raises(ShapeError, match="hidden_size=9"):
        d.axes_from_inputs([torch.zeros(5, 8), torch.zeros(9)])
    with pytest.raises(ShapeError, match="2 dimensions"):
        d.axes_from_inputs([torch.zeros(5, 8), torch.zeros(2, 8)])


def test_scalar_inputs_have_no_shape() -> None:
    data = definition()
    data["inputs"]["eps"] = {"shape": None, "dtype": "float32"}
    d = Definition.from_dict(data)
    assert d.inputs["eps"].shape is None
    assert d.axes_from_inputs([torch.zeros(2, 8), torch.zeros(8), 1e-5])["batch_size"] == 2
