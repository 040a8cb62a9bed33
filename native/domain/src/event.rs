//! An InventoryEvent payload straight to the domain's `InventoryEvent`.
//!
//! The reference path reads the payload into a field mapping
//! (`availability_contracts.avro_reader`, or its compiled twin) and `parse_event`
//! validates it. Here the payload becomes the event in one step, but only when it is
//! certainly valid under `parse_event`'s rules; anything unusual (a refusal of the
//! reader, trailing bytes, text outside printable ASCII, a limit reached) gives None and
//! the reference path decides, with its reasons. So this never accepts what the
//! reference refuses, and what it accepts equals what the reference builds. The limits,
//! the quantity rule and the fields each type requires are read from
//! `availability_domain.events`, their one definition.

use avro_wire::{read_fields, EventFields, Reader, OPTIONAL_STRINGS};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use pyo3::IntoPyObjectExt;

#[derive(Clone, Copy)]
enum QuantityRule {
    Positive,
    NonNegative,
    NonZero,
}

impl QuantityRule {
    fn allows(self, quantity: i64) -> bool {
        match self {
            QuantityRule::Positive => quantity > 0,
            QuantityRule::NonNegative => quantity >= 0,
            QuantityRule::NonZero => quantity != 0,
        }
    }
}

/// What `parse_event` asks of one event type.
struct TypeRule {
    member: Py<PyAny>,
    quantity: QuantityRule,
    /// Per optional string (in `OPTIONAL_STRINGS` order): whether the type requires it.
    required: [bool; 5],
    /// TRANSFER_SHIPPED: its destination may not be its origin.
    shipped: bool,
}

struct Rules {
    event: Py<PyAny>,
    tuple_new: Py<PyAny>,
    /// Per schema symbol; None: not a type the domain knows (the reference refuses it).
    types: Vec<Option<TypeRule>>,
    max_id: usize,
    max_text: usize,
    max_quantity: i64,
    max_time: i64,
    /// The key delimiter, when it is one ASCII byte (else every event takes the
    /// reference path).
    delimiter: Option<u8>,
    /// Per optional string: whether it is an id (ids may not hold the delimiter).
    optional_ids: [bool; 5],
}

static RULES: PyOnceLock<Rules> = PyOnceLock::new();

fn rules(py: Python<'_>) -> PyResult<&Rules> {
    RULES.get_or_try_init(py, || {
        let events = py.import("availability_domain.events")?;
        let member_of = events.getattr("EventType")?;
        let quantity_rules = events.getattr("_QUANTITY_RULE")?;
        let quantity_rules = quantity_rules.cast::<PyDict>()?;
        let required_by_type = events.getattr("_REQUIRED_BY_TYPE")?;
        let required_by_type = required_by_type.cast::<PyDict>()?;
        let positive = events.getattr("_POSITIVE")?;
        let non_negative = events.getattr("_NON_NEGATIVE")?;
        let non_zero = events.getattr("_NON_ZERO")?;
        let id_fields = events.getattr("_ID_FIELDS")?;
        let symbols = py
            .import("availability_contracts.schemas")?
            .getattr("event_types")?
            .call0()?;
        let mut types = Vec::new();
        for symbol in symbols.try_iter()? {
            let symbol = symbol?;
            let Ok(member) = member_of.call1((&symbol,)) else {
                types.push(None);
                continue;
            };
            let Some(rule) = quantity_rules.get_item(&member)? else {
                types.push(None);
                continue;
            };
            let quantity = if rule.eq(&positive)? {
                QuantityRule::Positive
            } else if rule.eq(&non_negative)? {
                QuantityRule::NonNegative
            } else if rule.eq(&non_zero)? {
                QuantityRule::NonZero
            } else {
                types.push(None);
                continue;
            };
            let mut required = [false; 5];
            let mut known = true;
            if let Some(names) = required_by_type.get_item(&member)? {
                for name in names.try_iter()? {
                    let name: String = name?.extract()?;
                    match OPTIONAL_STRINGS.iter().position(|field| *field == name) {
                        Some(at) => required[at] = true,
                        None => known = false,
                    }
                }
            }
            if !known {
                types.push(None);
                continue;
            }
            let shipped = symbol.extract::<String>()? == "TRANSFER_SHIPPED";
            types.push(Some(TypeRule {
                member: member.unbind(),
                quantity,
                required,
                shipped,
            }));
        }
        let mut optional_ids = [false; 5];
        for (slot, name) in optional_ids.iter_mut().zip(OPTIONAL_STRINGS) {
            *slot = id_fields.contains(name)?;
        }
        let required_ids = ["event_id", "sku", "location_id"];
        for name in required_ids {
            if !id_fields.contains(name)? {
                return Err(pyo3::exceptions::PyRuntimeError::new_err(format!(
                    "the compiled event reader expects {name:?} to be an id field"
                )));
            }
        }
        if id_fields.contains("source")? {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "the compiled event reader expects 'source' not to be an id field",
            ));
        }
        let delimiter: String = py
            .import("availability_contracts.keys")?
            .getattr("KEY_DELIMITER")?
            .extract()?;
        Ok::<_, PyErr>(Rules {
            event: events.getattr("InventoryEvent")?.unbind(),
            tuple_new: py.get_type::<PyTuple>().getattr("__new__")?.unbind(),
            types,
            max_id: events.getattr("MAX_ID_LENGTH")?.extract()?,
            max_text: events.getattr("MAX_TEXT_LENGTH")?.extract()?,
            max_quantity: events.getattr("MAX_QUANTITY")?.extract()?,
            max_time: events.getattr("MAX_TIME_MS")?.extract()?,
            delimiter: match delimiter.as_bytes() {
                [byte] if byte.is_ascii() => Some(*byte),
                _ => None,
            },
            optional_ids,
        })
    })
}

impl Rules {
    /// Non-empty printable ASCII, not only spaces, within `limit`, and without the key
    /// delimiter when it is an id: what `_check_string` certainly accepts.
    fn plain(&self, text: &str, limit: usize, id: bool) -> bool {
        let forbidden = if id { self.delimiter } else { None };
        if id && self.delimiter.is_none() {
            return false;
        }
        !text.is_empty()
            && text.len() <= limit
            && text
                .bytes()
                .all(|byte| (0x20..=0x7E).contains(&byte) && Some(byte) != forbidden)
            && text.bytes().any(|byte| byte != b' ')
    }

    fn time(&self, value: i64) -> bool {
        (0..=self.max_time).contains(&value)
    }

    fn valid<'r>(&'r self, fields: &EventFields<'_>) -> Option<&'r TypeRule> {
        let rule = self.types.get(fields.event_type)?.as_ref()?;
        let required_ok = self.plain(fields.event_id, self.max_id, true)
            && self.plain(fields.source, self.max_id, false)
            && self.plain(fields.sku, self.max_id, true)
            && self.plain(fields.location_id, self.max_id, true);
        if !required_ok {
            return None;
        }
        for (at, value) in fields.optional.iter().enumerate() {
            match value {
                None if rule.required[at] => return None,
                None => {}
                Some(text) => {
                    let limit = if OPTIONAL_STRINGS[at] == "reason" {
                        self.max_text
                    } else {
                        self.max_id
                    };
                    if !self.plain(text, limit, self.optional_ids[at]) {
                        return None;
                    }
                }
            }
        }
        let quantity = fields.quantity;
        if !self.time(fields.occurred_at)
            || matches!(fields.expires_at, Some(at) if !self.time(at))
            || !(-self.max_quantity..=self.max_quantity).contains(&quantity)
            || !rule.quantity.allows(quantity)
        {
            return None;
        }
        let counterparty = fields.optional[2];
        if rule.shipped && counterparty == Some(fields.location_id) {
            return None;
        }
        Some(rule)
    }
}

/// The `InventoryEvent` of the payload at `pos` when it is certainly valid, else None.
#[pyfunction]
pub fn read_valid_event(py: Python<'_>, data: &[u8], pos: usize) -> PyResult<Option<Py<PyAny>>> {
    let rules = rules(py)?;
    let mut reader = Reader { data, pos };
    let Ok(fields) = read_fields(&mut reader, rules.types.len()) else {
        return Ok(None);
    };
    if reader.pos != data.len() {
        return Ok(None);
    }
    let Some(rule) = rules.valid(&fields) else {
        return Ok(None);
    };
    let [reason, transfer_id, counterparty, reservation_id, channel] = fields.optional;
    let values = [
        fields.event_id.into_bound_py_any(py)?,
        rule.member.bind(py).clone(),
        fields.occurred_at.into_bound_py_any(py)?,
        fields.source.into_bound_py_any(py)?,
        fields.sku.into_bound_py_any(py)?,
        fields.location_id.into_bound_py_any(py)?,
        fields.quantity.into_bound_py_any(py)?,
        reason.into_bound_py_any(py)?,
        transfer_id.into_bound_py_any(py)?,
        counterparty.into_bound_py_any(py)?,
        reservation_id.into_bound_py_any(py)?,
        channel.into_bound_py_any(py)?,
        fields.expires_at.into_bound_py_any(py)?,
        fields.restockable.into_bound_py_any(py)?,
    ];
    let event = rules
        .tuple_new
        .bind(py)
        .call1((rules.event.bind(py), PyTuple::new(py, values)?))?;
    Ok(Some(event.unbind()))
}
