//! The compiled Avro codec of the engine's hot path.
//!
//! Three functions with the behaviour of their pure-Python references, which stay the
//! readable definition of the contract and are what this module is tested against:
//!
//! - `read_inventory_event` = `availability_contracts.avro_reader.read_inventory_event`
//!   (same field mapping, same `InvalidEvent` reasons and codes);
//! - `position_record` / `channel_record` = `availability_contracts.avro_writer`'s
//!   writers (same bytes). A record in a shape other than the snapshot tuple (a mapping,
//!   a list, another length) is handed to the Python writer, so every input gives what
//!   the reference gives.
//!
//! Field order follows `schemas/avro/*.avsc`, as in the references; the tests compare
//! both implementations on random and on benchmark records.

use avro_wire::{put_long, put_str, read_fields, Reader, Refusal};
use pyo3::exceptions::PyOverflowError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyDict, PyList, PyString, PyTuple};
use pyo3::{intern, IntoPyObjectExt};

/// A refusal as the `InvalidEvent` it becomes.
trait IntoPyErr {
    fn into_err(self, py: Python<'_>) -> PyErr;
}

impl IntoPyErr for Refusal {
    fn into_err(self, py: Python<'_>) -> PyErr {
        match invalid_event(py).and_then(|class| class.call1((self.reason(), "undecodable"))) {
            Ok(error) => PyErr::from_value(error),
            Err(err) => err,
        }
    }
}

static INVALID_EVENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EVENT_TYPES: PyOnceLock<Vec<Py<PyString>>> = PyOnceLock::new();
static PYTHON_WRITERS: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

fn invalid_event(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    INVALID_EVENT
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("availability_contracts.errors")?
                    .getattr("InvalidEvent")?
                    .unbind(),
            )
        })
        .map(|class| class.bind(py))
}

/// The enum's symbols as the schema module gives them (the .avsc is their one source).
fn event_types(py: Python<'_>) -> PyResult<&Vec<Py<PyString>>> {
    EVENT_TYPES.get_or_try_init(py, || {
        let symbols = py
            .import("availability_contracts.schemas")?
            .getattr("event_types")?
            .call0()?;
        symbols
            .try_iter()?
            .map(|symbol| Ok(symbol?.cast_into::<PyString>()?.unbind()))
            .collect::<PyResult<Vec<_>>>()
    })
}

fn python_writers(py: Python<'_>) -> PyResult<&(Py<PyAny>, Py<PyAny>)> {
    PYTHON_WRITERS.get_or_try_init(py, || {
        let module = py.import("availability_contracts.avro_writer")?;
        Ok::<_, PyErr>((
            module.getattr("position_record")?.unbind(),
            module.getattr("channel_record")?.unbind(),
        ))
    })
}

/// The field mapping of one InventoryEvent at `pos` and the position after it.
#[pyfunction]
#[pyo3(signature = (data, pos = 0))]
fn read_inventory_event<'py>(
    py: Python<'py>,
    data: &[u8],
    pos: usize,
) -> PyResult<(Bound<'py, PyDict>, usize)> {
    let types = event_types(py)?;
    let mut reader = Reader { data, pos };
    let fields = read_fields(&mut reader, types.len()).map_err(|refusal| refusal.into_err(py))?;
    let record = PyDict::new(py);
    record.set_item(intern!(py, "event_id"), fields.event_id)?;
    record.set_item(intern!(py, "event_type"), types[fields.event_type].bind(py))?;
    record.set_item(intern!(py, "occurred_at"), fields.occurred_at)?;
    record.set_item(intern!(py, "source"), fields.source)?;
    record.set_item(intern!(py, "sku"), fields.sku)?;
    record.set_item(intern!(py, "location_id"), fields.location_id)?;
    record.set_item(intern!(py, "quantity"), fields.quantity)?;
    let names = [
        intern!(py, "reason"),
        intern!(py, "transfer_id"),
        intern!(py, "counterparty_location_id"),
        intern!(py, "reservation_id"),
        intern!(py, "channel"),
    ];
    for (name, value) in names.into_iter().zip(fields.optional) {
        record.set_item(name, value)?;
    }
    record.set_item(intern!(py, "expires_at"), fields.expires_at)?;
    record.set_item(
        intern!(py, "restockable"),
        PyBool::new(py, fields.restockable),
    )?;
    Ok((record, reader.pos))
}

fn put_string(out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    put_str(out, value.cast::<PyString>()?.to_str()?);
    Ok(())
}

fn long_of(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    value.extract::<i64>().map_err(|err| {
        if err.is_instance_of::<PyOverflowError>(value.py()) {
            PyOverflowError::new_err("a snapshot number is outside the range of an Avro long")
        } else {
            err
        }
    })
}

/// PositionAvailability from the snapshot tuple; anything else via the Python writer.
#[pyfunction]
fn position_record<'py>(
    py: Python<'py>,
    record: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let values = match record.cast::<PyTuple>() {
        Ok(values) if values.len() == 11 => values,
        _ => return python_writers(py)?.0.bind(py).call1((record,)),
    };
    let mut out = Vec::with_capacity(64);
    put_string(&mut out, &*values.get_borrowed_item(0)?)?;
    put_string(&mut out, &*values.get_borrowed_item(1)?)?;
    for index in 2..11 {
        put_long(&mut out, long_of(&*values.get_borrowed_item(index)?)?);
    }
    PyBytes::new(py, &out).into_bound_py_any(py)
}

fn put_contribution(out: &mut Vec<u8>, item: &Bound<'_, PyAny>) -> PyResult<bool> {
    let Ok(contribution) = item.cast::<PyTuple>() else {
        return Ok(false);
    };
    if contribution.len() != 3 {
        return Ok(false);
    }
    put_string(out, &*contribution.get_borrowed_item(0)?)?;
    put_long(out, long_of(&*contribution.get_borrowed_item(1)?)?);
    put_long(out, long_of(&*contribution.get_borrowed_item(2)?)?);
    Ok(true)
}

/// The channel snapshot tuple's bytes, or None when it is in a shape the Python writer
/// must handle.
fn channel_bytes(values: &Bound<'_, PyTuple>) -> PyResult<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(128);
    put_string(&mut out, &*values.get_borrowed_item(0)?)?;
    put_string(&mut out, &*values.get_borrowed_item(1)?)?;
    let location_id = values.get_borrowed_item(2)?;
    if location_id.is_none() {
        out.push(0);
    } else {
        out.push(2);
        put_string(&mut out, &location_id)?;
    }
    for index in 3..7 {
        put_long(&mut out, long_of(&*values.get_borrowed_item(index)?)?);
    }
    let locations = values.get_borrowed_item(7)?;
    let items: Vec<Bound<'_, PyAny>> = if let Ok(tuple) = locations.cast::<PyTuple>() {
        tuple.iter().collect()
    } else if let Ok(list) = locations.cast::<PyList>() {
        list.iter().collect()
    } else {
        return Ok(None);
    };
    if !items.is_empty() {
        put_long(&mut out, items.len() as i64);
        for item in &items {
            if !put_contribution(&mut out, item)? {
                return Ok(None);
            }
        }
    }
    out.push(0);
    Ok(Some(out))
}

/// ChannelAvailability from the snapshot tuple; anything else via the Python writer.
#[pyfunction]
fn channel_record<'py>(py: Python<'py>, record: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(values) = record.cast::<PyTuple>() {
        if values.len() == 8 {
            if let Some(out) = channel_bytes(values)? {
                return PyBytes::new(py, &out).into_bound_py_any(py);
            }
        }
    }
    python_writers(py)?.1.bind(py).call1((record,))
}

#[pymodule]
fn _avro(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(read_inventory_event, module)?)?;
    module.add_function(wrap_pyfunction!(position_record, module)?)?;
    module.add_function(wrap_pyfunction!(channel_record, module)?)?;
    Ok(())
}
