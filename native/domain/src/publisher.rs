//! The compiled snapshot publisher.
//!
//! `CompiledPublisher.publish_records` does what
//! `availability_domain.snapshots.SnapshotPublisher.publish` followed by the dataflow's
//! snapshot encoding does: the same snapshots, versions, order and Avro bytes, as sink
//! records. The Python publisher stays the readable definition and is what this module
//! is tested against (`tests/dataflows/test_snapshot_output.py`). What is
//! rare stays in Python: a republish (restore, rules change) converts to the reference
//! and back (`to_reference`, `from_reference`), and a recovery snapshot pickles as the
//! reference's (`pack_publisher`, the same bytes), so snapshots of either implementation
//! restore into both.
//!
//! The state is the reference's (last published quantities and version per location,
//! `(ats, as_of)` and version per channel slot, in insertion order); the pools of pooled
//! channels and their member lists are derived and rebuilt on demand, as there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use avro_wire::{put_long, put_str};
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple};

/// Published quantities in `PositionQuantities` order.
type Quantities = [i64; 7];
const IN_TRANSIT: usize = 3;
const ATS: usize = 5;
const AS_OF: usize = 6;

/// A channel slot: (channel, location or None for a pooled channel).
type Slot = (String, Option<String>);
/// A channel slot's last published `(ats, as_of)` and version.
type ChannelValue = ((i64, i64), i64);

fn overflow() -> PyErr {
    PyOverflowError::new_err("a snapshot number is outside the range of an Avro long")
}

fn to_long(value: i128) -> PyResult<i64> {
    i64::try_from(value).map_err(|_| overflow())
}

fn saturate(value: i128) -> i128 {
    value.clamp(i64::MIN as i128, i64::MAX as i128)
}

struct Python_ {
    key_delimiter: String,
    tuple_new: Py<PyAny>,
    position_quantities: Py<PyAny>,
    reference_publisher: Py<PyAny>,
    publisher_blob: Py<PyAny>,
    channel_ats: Py<PyAny>,
}

static PYTHON: PyOnceLock<Python_> = PyOnceLock::new();

fn python(py: Python<'_>) -> PyResult<&Python_> {
    PYTHON.get_or_try_init(py, || {
        let snapshots = py.import("availability_domain.snapshots")?;
        Ok::<_, PyErr>(Python_ {
            key_delimiter: py
                .import("availability_contracts.keys")?
                .getattr("KEY_DELIMITER")?
                .extract()?,
            tuple_new: py.get_type::<PyTuple>().getattr("__new__")?.unbind(),
            position_quantities: py
                .import("availability_domain.inventory")?
                .getattr("PositionQuantities")?
                .unbind(),
            reference_publisher: snapshots.getattr("SnapshotPublisher")?.unbind(),
            publisher_blob: snapshots.getattr("_publisher_blob")?.unbind(),
            channel_ats: py
                .import("availability_domain.channels")?
                .getattr("channel_ats")?
                .unbind(),
        })
    })
}

/// One channel rule, with the formula's numbers where they fit in 128 bits.
struct Channel {
    name: String,
    rule: Py<PyAny>,
    per_location: bool,
    include_in_transit: bool,
    /// (numerator, denominator, buffer, max_quantity); None: the Python formula decides.
    formula: Option<(i128, i128, i128, Option<i128>)>,
}

impl Channel {
    fn pooled_quantity(include_in_transit: bool, quantities: &Quantities) -> i128 {
        let ats = quantities[ATS] as i128;
        if include_in_transit {
            ats + quantities[IN_TRANSIT] as i128
        } else {
            ats
        }
    }

    /// `availability_domain.channels.channel_ats`.
    fn ats(&self, py: Python<'_>, pooled: i128) -> PyResult<i64> {
        if let Some((numerator, denominator, buffer, max_quantity)) = self.formula {
            if let Some(scaled) = numerator.checked_mul(pooled) {
                if let Some(value) = scaled.div_euclid(denominator).checked_sub(buffer) {
                    if value < 0 {
                        return Ok(0);
                    }
                    if let Some(max) = max_quantity {
                        if value > max {
                            return to_long(max);
                        }
                    }
                    return to_long(saturate(value));
                }
            }
        }
        let value = python(py)?
            .channel_ats
            .bind(py)
            .call1((self.rule.bind(py), pooled))?;
        value.extract::<i64>().map_err(|_| overflow())
    }
}

/// A `Rules` object's channels and safety stock, read once per rules object.
struct CompiledRules {
    rules: Py<PyAny>,
    channels: Vec<Channel>,
    index: HashMap<String, usize>,
    /// (sku, location or None) -> units; None when a number does not fit (Python decides).
    overrides: Option<HashMap<(String, Option<String>), i128>>,
    override_skus: HashSet<String>,
    location_safety: Option<HashMap<String, i128>>,
    /// location -> indices of the channels it is eligible for, from `channel_names_for`.
    eligible: Mutex<HashMap<String, Arc<Vec<usize>>>>,
}

fn int128(value: &Bound<'_, PyAny>) -> Option<i128> {
    value.extract::<i128>().ok()
}

impl CompiledRules {
    fn new(rules: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = rules.py();
        let mut channels = Vec::new();
        let mut index = HashMap::new();
        let table = rules.getattr(intern!(py, "channels"))?;
        for rule in table.cast::<PyDict>()?.values().iter() {
            let name: String = rule.getattr(intern!(py, "name"))?.extract()?;
            let allocation = rule.getattr(intern!(py, "allocation"))?;
            let numerator = int128(&allocation.getattr(intern!(py, "numerator"))?);
            let denominator = int128(&allocation.getattr(intern!(py, "denominator"))?);
            let buffer = int128(&rule.getattr(intern!(py, "buffer"))?);
            let max_quantity = rule.getattr(intern!(py, "max_quantity"))?;
            let max = if max_quantity.is_none() {
                Some(None)
            } else {
                int128(&max_quantity).map(Some)
            };
            let formula = match (numerator, denominator, buffer, max) {
                (Some(n), Some(d), Some(b), Some(m)) if d > 0 => Some((n, d, b, m)),
                _ => None,
            };
            index.insert(name.clone(), channels.len());
            channels.push(Channel {
                name,
                rule: rule.clone().unbind(),
                per_location: rule.getattr(intern!(py, "per_location"))?.is_truthy()?,
                include_in_transit: rule
                    .getattr(intern!(py, "include_in_transit"))?
                    .is_truthy()?,
                formula,
            });
        }
        let mut overrides = Some(HashMap::new());
        let mut override_skus = HashSet::new();
        let table = rules.getattr(intern!(py, "safety_stock_overrides"))?;
        for (key, units) in table.cast::<PyDict>()?.iter() {
            let (sku, location): (String, Option<String>) = key.extract()?;
            override_skus.insert(sku.clone());
            match (int128(&units), overrides.as_mut()) {
                (Some(units), Some(map)) => {
                    map.insert((sku, location), units);
                }
                _ => overrides = None,
            }
        }
        let mut location_safety = Some(HashMap::new());
        let table = rules.getattr(intern!(py, "locations"))?;
        for (location_id, location) in table.cast::<PyDict>()?.iter() {
            let units = int128(&location.getattr(intern!(py, "safety_stock"))?);
            match (units, location_safety.as_mut()) {
                (Some(units), Some(map)) => {
                    map.insert(location_id.extract()?, units);
                }
                _ => location_safety = None,
            }
        }
        Ok(CompiledRules {
            rules: rules.clone().unbind(),
            channels,
            index,
            overrides,
            override_skus,
            location_safety,
            eligible: Mutex::new(HashMap::new()),
        })
    }

    /// `Rules.safety_stock`.
    fn safety_stock(&self, py: Python<'_>, sku: &str, location_id: &str) -> PyResult<i128> {
        let (Some(overrides), Some(locations)) = (&self.overrides, &self.location_safety) else {
            let units = self
                .rules
                .bind(py)
                .call_method1(intern!(py, "safety_stock"), (sku, location_id))?;
            return units.extract::<i128>().map_err(|_| overflow());
        };
        if self.override_skus.contains(sku) {
            let key = (sku.to_owned(), Some(location_id.to_owned()));
            if let Some(units) = overrides.get(&key) {
                return Ok(*units);
            }
            if let Some(units) = overrides.get(&(key.0, None)) {
                return Ok(*units);
            }
        }
        Ok(locations.get(location_id).copied().unwrap_or(0))
    }

    /// The channels `location_id` is eligible for, in file order (`channel_names_for`).
    fn eligible(&self, py: Python<'_>, location_id: &str) -> PyResult<Arc<Vec<usize>>> {
        if let Some(found) = self.eligible.lock().unwrap().get(location_id) {
            return Ok(found.clone());
        }
        let names = self
            .rules
            .bind(py)
            .call_method1(intern!(py, "channel_names_for"), (location_id,))?;
        let mut indices = Vec::new();
        for name in names.try_iter()? {
            let name: String = name?.extract()?;
            if let Some(at) = self.index.get(&name) {
                indices.push(*at);
            }
        }
        indices.sort_unstable();
        let found = Arc::new(indices);
        self.eligible
            .lock()
            .unwrap()
            .insert(location_id.to_owned(), found.clone());
        Ok(found)
    }
}

static RULES: Mutex<Vec<(Py<PyAny>, Arc<CompiledRules>)>> = Mutex::new(Vec::new());
const RULES_KEPT: usize = 4;

fn compiled_rules(rules: &Bound<'_, PyAny>) -> PyResult<Arc<CompiledRules>> {
    if let Some((_, found)) = RULES
        .lock()
        .unwrap()
        .iter()
        .find(|(seen, _)| seen.is(rules))
    {
        return Ok(found.clone());
    }
    let compiled = Arc::new(CompiledRules::new(rules)?);
    let mut cache = RULES.lock().unwrap();
    cache.insert(0, (rules.clone().unbind(), compiled.clone()));
    cache.truncate(RULES_KEPT);
    Ok(compiled)
}

/// A map that iterates in insertion order, like the reference's dicts (nothing is ever
/// removed here: removals happen in a republish, which runs on the reference).
struct Ordered<K, V> {
    index: HashMap<K, usize>,
    entries: Vec<(K, V)>,
}

impl<K: std::hash::Hash + Eq + Clone, V> Ordered<K, V> {
    fn new() -> Self {
        Ordered {
            index: HashMap::new(),
            entries: Vec::new(),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.index.get(key).map(|at| &self.entries[*at].1)
    }

    /// Where the entry is now, and whether it is new.
    fn insert(&mut self, key: K, value: V) -> (usize, bool) {
        match self.index.get(&key) {
            Some(&at) => {
                self.entries[at].1 = value;
                (at, false)
            }
            None => {
                let at = self.entries.len();
                self.index.insert(key.clone(), at);
                self.entries.push((key, value));
                (at, true)
            }
        }
    }
}

/// A pooled channel's sum and latest `as_of` over its members, and their contributions
/// in location order (the reference's `ChannelPool`).
struct Pool {
    include_in_transit: bool,
    total: i128,
    as_of: i64,
    contributions: Vec<(String, i64, i64)>,
}

impl Pool {
    fn find(&self, location_id: &str) -> Result<usize, usize> {
        self.contributions
            .binary_search_by(|(location, _, _)| location.as_str().cmp(location_id))
    }

    fn add(&mut self, location_id: &str, quantities: &Quantities) {
        let at = self.find(location_id).unwrap_or_else(|at| at);
        self.contributions.insert(
            at,
            (
                location_id.to_owned(),
                quantities[ATS],
                quantities[IN_TRANSIT],
            ),
        );
        self.total += Channel::pooled_quantity(self.include_in_transit, quantities);
        self.as_of = self.as_of.max(quantities[AS_OF]);
    }

    /// False when the pool must be rebuilt instead (its latest `as_of` went back).
    fn update(&mut self, location_id: &str, old: &Quantities, new: &Quantities) -> bool {
        let Ok(at) = self.find(location_id) else {
            return true;
        };
        if new[AS_OF] < old[AS_OF] && old[AS_OF] >= self.as_of {
            return false;
        }
        self.total += Channel::pooled_quantity(self.include_in_transit, new)
            - Channel::pooled_quantity(self.include_in_transit, old);
        self.as_of = self.as_of.max(new[AS_OF]);
        self.contributions[at] = (location_id.to_owned(), new[ATS], new[IN_TRANSIT]);
        true
    }
}

/// Where records go: the sink's record type and each topic's name and value header.
#[pyclass(frozen, module = "availability_domain._core")]
pub struct SnapshotTopics {
    record_type: Py<PyAny>,
    positions: Py<PyString>,
    channels: Py<PyString>,
    position_header: Vec<u8>,
    channel_header: Vec<u8>,
}

#[pymethods]
impl SnapshotTopics {
    /// `record_type(topic, key, value, origin_ms)` is a tuple subclass (the sink's
    /// `OutgoingRecord`); each value starts with its topic's header (the schema-registry
    /// prefix, or nothing).
    #[new]
    fn new(
        record_type: Py<PyAny>,
        positions: Py<PyString>,
        channels: Py<PyString>,
        position_header: Vec<u8>,
        channel_header: Vec<u8>,
    ) -> Self {
        SnapshotTopics {
            record_type,
            positions,
            channels,
            position_header,
            channel_header,
        }
    }
}

/// What one call publishes, before it becomes Python records.
struct Out<'a> {
    topics: &'a SnapshotTopics,
    sku: &'a str,
    computed_at: i64,
    origin_ms: i64,
    positions: Vec<(String, Vec<u8>)>,
    channels: Vec<(String, Vec<u8>)>,
}

impl Out<'_> {
    fn position(&mut self, delimiter: &str, location_id: &str, q: &Quantities, version: i64) {
        let mut value = Vec::with_capacity(self.topics.position_header.len() + 48);
        value.extend_from_slice(&self.topics.position_header);
        put_str(&mut value, self.sku);
        put_str(&mut value, location_id);
        for quantity in q {
            put_long(&mut value, *quantity);
        }
        put_long(&mut value, version);
        put_long(&mut value, self.computed_at);
        self.positions
            .push((format!("{}{delimiter}{location_id}", self.sku), value));
    }

    #[allow(clippy::too_many_arguments)]
    fn channel(
        &mut self,
        delimiter: &str,
        name: &str,
        location_id: Option<&str>,
        ats: i64,
        as_of: i64,
        version: i64,
        contributions: &[(&str, i64, i64)],
    ) {
        let mut value = Vec::with_capacity(self.topics.channel_header.len() + 64);
        value.extend_from_slice(&self.topics.channel_header);
        put_str(&mut value, name);
        put_str(&mut value, self.sku);
        match location_id {
            None => value.push(0),
            Some(location_id) => {
                value.push(2);
                put_str(&mut value, location_id);
            }
        }
        put_long(&mut value, ats);
        put_long(&mut value, as_of);
        put_long(&mut value, version);
        put_long(&mut value, self.computed_at);
        if !contributions.is_empty() {
            put_long(&mut value, contributions.len() as i64);
            for (location, ats, in_transit) in contributions {
                put_str(&mut value, location);
                put_long(&mut value, *ats);
                put_long(&mut value, *in_transit);
            }
        }
        value.push(0);
        let key = match location_id {
            Some(location_id) if !location_id.is_empty() => {
                format!("{name}{delimiter}{}{delimiter}{location_id}", self.sku)
            }
            _ => format!("{name}{delimiter}{}", self.sku),
        };
        self.channels.push((key, value));
    }

    fn records(self, py: Python<'_>) -> PyResult<(Vec<Py<PyAny>>, usize, usize)> {
        let tuple_new = python(py)?.tuple_new.bind(py);
        let record_type = self.topics.record_type.bind(py);
        let counts = (self.positions.len(), self.channels.len());
        let mut records = Vec::with_capacity(counts.0 + counts.1);
        let groups = [
            (self.topics.positions.bind(py), self.positions),
            (self.topics.channels.bind(py), self.channels),
        ];
        for (topic, group) in groups {
            for (key, value) in group {
                let fields = (topic, key, PyBytes::new(py, &value), self.origin_ms);
                records.push(tuple_new.call1((record_type, fields))?.unbind());
            }
        }
        Ok((records, counts.0, counts.1))
    }
}

/// Last published value and version per key of one SKU (see the module docs).
#[pyclass(module = "availability_domain._core")]
pub struct CompiledPublisher {
    positions: Ordered<String, (Quantities, i64)>,
    channels: Ordered<Slot, ChannelValue>,
    members: HashMap<String, Vec<String>>,
    pools: HashMap<String, Pool>,
    /// None until the first snapshot (see [`Packed`]).
    packed: Option<Packed>,
}

/// The publisher's blob as the last snapshot packed it, with where each record sits.
///
/// A SKU's snapshot is taken after every epoch that touched it, and an epoch changes
/// few of its published records; packing them all again walked every location id's
/// string, which was most of the publisher's share of the epoch's end. So a snapshot
/// rewrites the changed records in place, inserts the new positions at the end of
/// theirs and appends the new channel slots (keys are never removed here). Only a
/// position record that changes width packs the whole blob again.
struct Packed {
    blob: Vec<u8>,
    /// Offset of each packed position's record (its length byte), in `positions`' order.
    position_at: Vec<usize>,
    /// Where the channel slots start.
    positions_end: usize,
    /// Offset of each packed channel slot's three longs, in `channels`' order.
    channel_at: Vec<usize>,
    /// Packed records changed since (indexes; new keys are the entries past the packed).
    changed_positions: Vec<usize>,
    changed_channels: Vec<usize>,
}

/// A position record of a recovery snapshot (the reference's `_POSITION_RECORD`, or
/// `_WIDE_POSITION_RECORD` when a quantity needs more than 32 bits): six quantities as
/// 32-bit (narrow) or 64-bit (wide) little-endian integers, then `as_of` and the
/// version as 64-bit; appended to `out` after its length byte, as the publisher blob
/// holds it.
fn pack_position_record(out: &mut Vec<u8>, q: &Quantities, version: i64) {
    let narrow = q[..AS_OF].iter().all(|v| i32::try_from(*v).is_ok());
    out.push(if narrow { 40 } else { 64 });
    for value in &q[..AS_OF] {
        if narrow {
            out.extend_from_slice(&(*value as i32).to_le_bytes());
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&q[AS_OF].to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
}

/// The inverse of [`pack_position_record`].
fn unpack_position_record(record: &[u8]) -> PyResult<(Quantities, i64)> {
    let width = match record.len() {
        40 => 4,
        64 => 8,
        n => {
            return Err(PyValueError::new_err(format!(
                "a published position record of {n} bytes (40 or 64 expected)"
            )))
        }
    };
    let mut q: Quantities = [0; 7];
    for (i, value) in q.iter_mut().take(AS_OF).enumerate() {
        let field = &record[i * width..(i + 1) * width];
        *value = if width == 4 {
            i64::from(i32::from_le_bytes(field.try_into().expect("4 bytes")))
        } else {
            i64::from_le_bytes(field.try_into().expect("8 bytes"))
        };
    }
    let tail = AS_OF * width;
    q[AS_OF] = i64::from_le_bytes(record[tail..tail + 8].try_into().expect("8 bytes"));
    let version = i64::from_le_bytes(record[tail + 8..tail + 16].try_into().expect("8 bytes"));
    Ok((q, version))
}

fn quantities_tuple(q: &Bound<'_, PyAny>) -> PyResult<Quantities> {
    let values: (i64, i64, i64, i64, i64, i64, i64) = q.extract().map_err(|_| overflow())?;
    Ok([
        values.0, values.1, values.2, values.3, values.4, values.5, values.6,
    ])
}

/// `SkuInventory.position_quantities`, read from the position's fields.
fn position_quantities(
    py: Python<'_>,
    inventory: &Bound<'_, PyAny>,
    position: &Bound<'_, PyAny>,
    sku: &str,
    location_id: &str,
    rules: &CompiledRules,
) -> PyResult<Quantities> {
    let field = |name: &Bound<'_, PyString>| -> PyResult<Option<i128>> {
        Ok(int128(&position.getattr(name)?))
    };
    let fields = (
        field(intern!(py, "base"))?,
        field(intern!(py, "delta_sum"))?,
        field(intern!(py, "reserved"))?,
        field(intern!(py, "unsellable"))?,
        field(intern!(py, "in_transit"))?,
        field(intern!(py, "as_of"))?,
    );
    let (
        Some(base),
        Some(delta_sum),
        Some(reserved),
        Some(unsellable),
        Some(in_transit),
        Some(as_of),
    ) = fields
    else {
        let q = inventory.call_method1(
            intern!(py, "position_quantities"),
            (location_id, rules.rules.bind(py)),
        )?;
        return quantities_tuple(&q);
    };
    let safety_stock = rules.safety_stock(py, sku, location_id)?;
    let on_hand = base + delta_sum;
    let available = on_hand - reserved - safety_stock;
    let mut q = [
        on_hand,
        unsellable,
        reserved,
        in_transit,
        safety_stock,
        available.max(0),
        as_of,
    ];
    let (min, max) = (i64::MIN as i128, i64::MAX as i128);
    let inside = |value: i128| min < value && value < max;
    if !inside(on_hand)
        || available >= max
        || !(inside(reserved) && inside(in_transit) && inside(unsellable))
    {
        q = q.map(saturate);
    }
    let mut out = [0i64; 7];
    for (slot, value) in out.iter_mut().zip(q) {
        *slot = to_long(value)?;
    }
    Ok(out)
}

fn version_after(next_version: &Bound<'_, PyAny>, previous: i64) -> PyResult<i64> {
    next_version.call1((previous,))?.extract()
}

fn strings(iterable: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    iterable
        .try_iter()?
        .map(|item| item?.extract::<String>())
        .collect()
}

impl CompiledPublisher {
    fn read_channels(&mut self, channels: &Bound<'_, PyDict>) -> PyResult<()> {
        for (slot, entry) in channels.iter() {
            let ((ats, as_of), version): ((i64, i64), i64) =
                entry.extract().map_err(|_| overflow())?;
            self.channels
                .insert(slot.extract()?, ((ats, as_of), version));
        }
        Ok(())
    }

    fn empty() -> Self {
        CompiledPublisher {
            positions: Ordered::new(),
            channels: Ordered::new(),
            members: HashMap::new(),
            pools: HashMap::new(),
            packed: None,
        }
    }

    /// Note a record changed for the next snapshot (see [`Packed`]).
    fn changed(&mut self, at: usize, new: bool, list: fn(&mut Packed) -> &mut Vec<usize>) {
        let records = self.positions.entries.len() + self.channels.entries.len();
        if let (false, Some(packed)) = (new, self.packed.as_mut()) {
            let changed = list(packed);
            changed.push(at);
            if changed.len() > records {
                self.packed = None; // packing it whole is cheaper now
            }
        }
    }

    /// The reference's `_record_position`.
    fn record_position(
        &mut self,
        rules: &CompiledRules,
        location_id: &str,
        quantities: Quantities,
        version: i64,
        names: &[usize],
    ) {
        let previous = self.positions.get(location_id).map(|(q, _)| *q);
        let (at, new) = self
            .positions
            .insert(location_id.to_owned(), (quantities, version));
        self.changed(at, new, |packed| &mut packed.changed_positions);
        let Some(previous) = previous else {
            for &channel in names {
                let name = &rules.channels[channel].name;
                if let Some(members) = self.members.get_mut(name) {
                    let at = members
                        .binary_search_by(|member| member.as_str().cmp(location_id))
                        .unwrap_or_else(|at| at);
                    members.insert(at, location_id.to_owned());
                }
                if let Some(pool) = self.pools.get_mut(name) {
                    pool.add(location_id, &quantities);
                }
            }
            return;
        };
        self.pools
            .retain(|_, pool| pool.update(location_id, &previous, &quantities));
    }

    fn members_of(
        &mut self,
        py: Python<'_>,
        rules: &CompiledRules,
        channel: usize,
    ) -> PyResult<&Vec<String>> {
        let name = &rules.channels[channel].name;
        if !self.members.contains_key(name) {
            let mut members = Vec::new();
            for (location_id, _) in &self.positions.entries {
                if rules.eligible(py, location_id)?.contains(&channel) {
                    members.push(location_id.clone());
                }
            }
            members.sort_unstable();
            self.members.insert(name.clone(), members);
        }
        Ok(&self.members[name])
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        py: Python<'_>,
        delimiter: &str,
        channel: &Channel,
        location_id: Option<&str>,
        pooled: i128,
        as_of: i64,
        contributions: &[(&str, i64, i64)],
        members_moved: bool,
        next_version: &Bound<'_, PyAny>,
        out: &mut Out<'_>,
    ) -> PyResult<()> {
        let value = (channel.ats(py, pooled)?, as_of);
        let slot = (channel.name.clone(), location_id.map(str::to_owned));
        let previous = self.channels.get(&slot).copied();
        if let Some((published, _)) = previous {
            if published == value && !members_moved {
                return Ok(());
            }
        }
        let version = version_after(next_version, previous.map_or(0, |(_, v)| v))?;
        let (at, new) = self.channels.insert(slot, (value, version));
        self.changed(at, new, |packed| &mut packed.changed_channels);
        out.channel(
            delimiter,
            &channel.name,
            location_id,
            value.0,
            as_of,
            version,
            contributions,
        );
        Ok(())
    }
}

#[pymethods]
impl CompiledPublisher {
    #[new]
    fn new() -> Self {
        Self::empty()
    }

    /// The same state as a reference `SnapshotPublisher` (its `positions` and
    /// `channels`); derived state is rebuilt on demand.
    #[staticmethod]
    fn from_reference(publisher: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = publisher.py();
        let mut compiled = Self::empty();
        let positions = publisher.getattr(intern!(py, "positions"))?;
        for (location_id, entry) in positions.cast::<PyDict>()?.iter() {
            let (q, version): (Bound<'_, PyAny>, i64) = entry.extract()?;
            compiled
                .positions
                .insert(location_id.extract()?, (quantities_tuple(&q)?, version));
        }
        compiled.read_channels(
            publisher
                .getattr(intern!(py, "channels"))?
                .cast::<PyDict>()?,
        )?;
        Ok(compiled)
    }

    /// What the reference's `_publisher_records` restores from a recovery snapshot
    /// (position records packed as `_POSITION_RECORD` or `_WIDE_POSITION_RECORD`), built
    /// without the reference publisher in between.
    #[staticmethod]
    fn from_records(positions: &Bound<'_, PyDict>, channels: &Bound<'_, PyDict>) -> PyResult<Self> {
        let mut compiled = Self::empty();
        for (location_id, record) in positions.iter() {
            let entry = unpack_position_record(record.cast::<PyBytes>()?.as_bytes())?;
            compiled.positions.insert(location_id.extract()?, entry);
        }
        compiled.read_channels(channels)?;
        Ok(compiled)
    }

    /// This state as a reference `SnapshotPublisher`.
    fn to_reference<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (positions, channels) = self.state(py)?;
        python(py)?
            .reference_publisher
            .bind(py)
            .call1((positions, channels))
    }

    /// What the reference's `_publisher_blob` restores from a recovery snapshot (the
    /// layout of `availability_domain.snapshots.pack_publisher`).
    #[staticmethod]
    fn from_blob(data: &[u8]) -> PyResult<Self> {
        let mut compiled = Self::empty();
        let mut blob = Blob { data, at: 0 };
        let positions = blob.count()?;
        let slots = blob.count()?;
        for _ in 0..positions {
            let location_id = blob
                .text()?
                .ok_or_else(|| blob.damaged("a position without a location"))?;
            let length = usize::from(blob.take(1)?[0]);
            if length != 40 && length != 64 {
                return Err(blob.damaged(&format!(
                    "a published position record of {length} bytes (40 or 64 expected)"
                )));
            }
            let entry = unpack_position_record(blob.take(length)?)?;
            compiled.positions.insert(location_id, entry);
        }
        for _ in 0..slots {
            let name = blob
                .text()?
                .ok_or_else(|| blob.damaged("a channel slot without a channel name"))?;
            let location_id = blob.text()?;
            let ats = blob.long()?;
            let as_of = blob.long()?;
            let version = blob.long()?;
            compiled
                .channels
                .insert((name, location_id), ((ats, as_of), version));
        }
        if blob.at != data.len() {
            return Err(blob.damaged(&format!("{} bytes after its end", data.len() - blob.at)));
        }
        Ok(compiled)
    }

    /// Pickles as the reference does (`_publisher_blob`, the same bytes): a snapshot of
    /// this publisher restores as a reference publisher, or straight into this one.
    fn __reduce__<'py>(&mut self, py: Python<'py>) -> PyResult<(Py<PyAny>, Bound<'py, PyTuple>)> {
        let blob = PyBytes::new(py, self.pack());
        let arguments = PyTuple::new(py, [blob])?;
        Ok((python(py)?.publisher_blob.clone_ref(py), arguments))
    }

    /// `SnapshotPublisher.publish` followed by the snapshot encoding: the sink records
    /// (positions first, then channels) and how many of each.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (inventory, touched, rules, now_ms, computed_at, next_version, forced, origin_ms, topics))]
    fn publish_records(
        &mut self,
        py: Python<'_>,
        inventory: &Bound<'_, PyAny>,
        touched: &Bound<'_, PyAny>,
        rules: &Bound<'_, PyAny>,
        now_ms: i64,
        computed_at: i64,
        next_version: &Bound<'_, PyAny>,
        forced: &Bound<'_, PyAny>,
        origin_ms: i64,
        topics: &SnapshotTopics,
    ) -> PyResult<(Vec<Py<PyAny>>, usize, usize)> {
        let delimiter = python(py)?.key_delimiter.as_str();
        let compiled = compiled_rules(rules)?;
        let sku: String = inventory.getattr(intern!(py, "sku"))?.extract()?;
        let mut affected = strings(touched)?;
        let expired = inventory.call_method1(intern!(py, "expire"), (now_ms,))?;
        let forced_ids = strings(forced)?;
        let forced: HashSet<&str> = forced_ids.iter().map(String::as_str).collect();
        {
            let mut seen: HashSet<String> = affected.iter().cloned().collect();
            for location_id in strings(&expired)?
                .into_iter()
                .chain(forced_ids.iter().cloned())
            {
                if seen.insert(location_id.clone()) {
                    affected.push(location_id);
                }
            }
            if seen.len() < affected.len() {
                affected.retain(|location_id| seen.remove(location_id));
            }
        }
        let positions = inventory.getattr(intern!(py, "positions"))?;
        let positions = positions.cast::<PyDict>()?;
        let mut out = Out {
            topics,
            sku: &sku,
            computed_at,
            origin_ms,
            positions: Vec::new(),
            channels: Vec::new(),
        };
        let mut changed: Vec<(&str, Arc<Vec<usize>>)> = Vec::new();
        let mut channel_names = vec![false; compiled.channels.len()];
        let mut moved: HashSet<&str> = HashSet::new();
        let mut moved_channels = vec![false; compiled.channels.len()];
        for location_id in &affected {
            let Some(position) = positions.get_item(location_id)? else {
                continue;
            };
            let quantities =
                position_quantities(py, inventory, &position, &sku, location_id, &compiled)?;
            let previous = self.positions.get(location_id.as_str()).copied();
            let is_forced = forced.contains(location_id.as_str());
            if let Some((published, _)) = previous {
                if published == quantities && !is_forced {
                    continue;
                }
            }
            let names = compiled.eligible(py, location_id)?;
            let version = match previous {
                None => {
                    moved.insert(location_id);
                    names.iter().for_each(|at| moved_channels[*at] = true);
                    version_after(next_version, 0)?
                }
                Some((old, version)) => {
                    if old[ATS] != quantities[ATS]
                        || old[IN_TRANSIT] != quantities[IN_TRANSIT]
                        || is_forced
                    {
                        moved.insert(location_id);
                        names.iter().for_each(|at| moved_channels[*at] = true);
                    }
                    version_after(next_version, version)?
                }
            };
            self.record_position(&compiled, location_id, quantities, version, &names);
            names.iter().for_each(|at| channel_names[*at] = true);
            changed.push((location_id, names));
            out.position(delimiter, location_id, &quantities, version);
        }
        for (at, channel) in compiled.channels.iter().enumerate() {
            if !channel_names[at] {
                continue;
            }
            if channel.per_location {
                for (location_id, names) in &changed {
                    if !names.contains(&at) {
                        continue;
                    }
                    let (q, _) = self
                        .positions
                        .get(*location_id)
                        .copied()
                        .unwrap_or_default();
                    let pooled = Channel::pooled_quantity(channel.include_in_transit, &q);
                    let contribution = [(*location_id, q[ATS], q[IN_TRANSIT])];
                    self.emit(
                        py,
                        delimiter,
                        channel,
                        Some(location_id),
                        pooled,
                        q[AS_OF].max(0),
                        &contribution,
                        moved.contains(location_id),
                        next_version,
                        &mut out,
                    )?;
                }
            } else {
                if !self.pools.contains_key(&channel.name) {
                    let members = self.members_of(py, &compiled, at)?.clone();
                    let mut pool = Pool {
                        include_in_transit: channel.include_in_transit,
                        total: 0,
                        as_of: 0,
                        contributions: Vec::with_capacity(members.len()),
                    };
                    for member in &members {
                        let (q, _) = self
                            .positions
                            .get(member.as_str())
                            .copied()
                            .unwrap_or_default();
                        pool.total += Channel::pooled_quantity(channel.include_in_transit, &q);
                        pool.as_of = pool.as_of.max(q[AS_OF]);
                        pool.contributions
                            .push((member.clone(), q[ATS], q[IN_TRANSIT]));
                    }
                    self.pools.insert(channel.name.clone(), pool);
                }
                let pool = self
                    .pools
                    .remove(&channel.name)
                    .unwrap_or_else(|| unreachable!());
                let contributions: Vec<(&str, i64, i64)> = pool
                    .contributions
                    .iter()
                    .map(|(location, ats, in_transit)| (location.as_str(), *ats, *in_transit))
                    .collect();
                let emitted = self.emit(
                    py,
                    delimiter,
                    channel,
                    None,
                    pool.total,
                    pool.as_of,
                    &contributions,
                    moved_channels[at],
                    next_version,
                    &mut out,
                );
                drop(contributions);
                self.pools.insert(channel.name.clone(), pool);
                emitted?;
            }
        }
        out.records(py)
    }
}

/// A text of the publisher blob: a length byte below 0xFE, or 0xFF and a `<I` length.
const NONE: u8 = 0xFE;
const LONG_TEXT: u8 = 0xFF;

fn put_text(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(NONE),
        Some(text) => {
            let length = text.len();
            if length < usize::from(NONE) {
                out.push(length as u8);
            } else {
                out.push(LONG_TEXT);
                out.extend_from_slice(&(length as u32).to_le_bytes());
            }
            out.extend_from_slice(text.as_bytes());
        }
    }
}

/// A channel slot's published ATS, its `as_of` and its version: three little-endian
/// longs at the start of `out`.
fn put_channel_value(out: &mut [u8], ((ats, as_of), version): &ChannelValue) {
    for (i, value) in [ats, as_of, version].into_iter().enumerate() {
        out[8 * i..8 * (i + 1)].copy_from_slice(&value.to_le_bytes());
    }
}

/// Appends a position's location id and record; returns where the record starts.
fn put_position(out: &mut Vec<u8>, location_id: &str, (q, version): &(Quantities, i64)) -> usize {
    put_text(out, Some(location_id));
    let at = out.len();
    pack_position_record(out, q, *version);
    at
}

/// Appends a channel slot (its name, location id and value); returns where the value
/// starts.
fn put_channel_slot(out: &mut Vec<u8>, (name, location_id): &Slot, value: &ChannelValue) -> usize {
    put_text(out, Some(name));
    put_text(out, location_id.as_deref());
    let at = out.len();
    out.extend_from_slice(&[0; 24]);
    put_channel_value(&mut out[at..], value);
    at
}

/// A reader over a publisher blob that refuses one that ends early.
struct Blob<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Blob<'a> {
    fn damaged(&self, what: &str) -> PyErr {
        PyValueError::new_err(format!("a damaged publisher snapshot: {what}"))
    }

    fn take(&mut self, length: usize) -> PyResult<&'a [u8]> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.data.len());
        let end = end.ok_or_else(|| self.damaged("it ends early"))?;
        let taken = &self.data[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn count(&mut self) -> PyResult<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn long(&mut self) -> PyResult<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn text(&mut self) -> PyResult<Option<String>> {
        let length = match self.take(1)?[0] {
            NONE => return Ok(None),
            LONG_TEXT => self.count()? as usize,
            length => usize::from(length),
        };
        let bytes = self.take(length)?;
        let text = std::str::from_utf8(bytes).map_err(|_| self.damaged("a text not in UTF-8"))?;
        Ok(Some(text.to_owned()))
    }
}

impl CompiledPublisher {
    /// The state in the layout of the reference's `pack_publisher`: the kept blob with
    /// the changed records rewritten, or packed whole (see [`Packed`]).
    fn pack(&mut self) -> &[u8] {
        if let Some(packed) = self.packed.take() {
            if let Some(patched) = self.patched(packed) {
                return &self.packed.insert(patched).blob;
            }
        }
        let packed = self.packed_whole();
        &self.packed.insert(packed).blob
    }

    fn patched(&self, mut packed: Packed) -> Option<Packed> {
        let positions = &self.positions.entries;
        let channels = &self.channels.entries;
        let mut record = Vec::with_capacity(65);
        for &index in &packed.changed_positions {
            let Some(&at) = packed.position_at.get(index) else {
                continue; // new since: written below
            };
            let (q, version) = &positions[index].1;
            record.clear();
            pack_position_record(&mut record, q, *version);
            let old = packed.blob.get_mut(at..at + record.len())?;
            if old[0] != record[0] {
                return None; // the record changed width
            }
            old.copy_from_slice(&record);
        }
        for &index in &packed.changed_channels {
            let Some(&at) = packed.channel_at.get(index) else {
                continue;
            };
            let (_, value) = &channels[index];
            put_channel_value(packed.blob.get_mut(at..at + 24)?, value);
        }
        packed.changed_positions.clear();
        packed.changed_channels.clear();
        if positions.len() > packed.position_at.len() {
            let mut inserted = Vec::new();
            let start = packed.positions_end;
            for (location_id, value) in &positions[packed.position_at.len()..] {
                let at = put_position(&mut inserted, location_id, value);
                packed.position_at.push(start + at);
            }
            packed.blob.splice(start..start, inserted.iter().copied());
            packed.positions_end += inserted.len();
            for at in &mut packed.channel_at {
                *at += inserted.len();
            }
        }
        for (slot, value) in &channels[packed.channel_at.len()..] {
            let at = put_channel_slot(&mut packed.blob, slot, value);
            packed.channel_at.push(at);
        }
        packed.blob[..4].copy_from_slice(&(positions.len() as u32).to_le_bytes());
        packed.blob[4..8].copy_from_slice(&(channels.len() as u32).to_le_bytes());
        Some(packed)
    }

    fn packed_whole(&self) -> Packed {
        let positions = &self.positions.entries;
        let channels = &self.channels.entries;
        let mut out = Vec::with_capacity(8 + positions.len() * 56 + channels.len() * 40);
        let mut position_at = Vec::with_capacity(positions.len());
        let mut channel_at = Vec::with_capacity(channels.len());
        out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
        out.extend_from_slice(&(channels.len() as u32).to_le_bytes());
        for (location_id, value) in positions {
            position_at.push(put_position(&mut out, location_id, value));
        }
        let positions_end = out.len();
        for (slot, value) in channels {
            channel_at.push(put_channel_slot(&mut out, slot, value));
        }
        Packed {
            blob: out,
            position_at,
            positions_end,
            channel_at,
            changed_positions: Vec::new(),
            changed_channels: Vec::new(),
        }
    }

    /// The reference's `positions` (with `PositionQuantities`) and `channels` dicts.
    fn state<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let quantities = python(py)?.position_quantities.bind(py);
        let positions = PyDict::new(py);
        for (location_id, (q, version)) in &self.positions.entries {
            let q = quantities.call1(PyTuple::new(py, q)?)?;
            positions.set_item(location_id, (q, version))?;
        }
        Ok((positions, self.channel_dict(py)?))
    }

    /// The reference's `channels`: slot -> ((ats, as_of), version).
    fn channel_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let channels = PyDict::new(py);
        for (slot, value) in &self.channels.entries {
            channels.set_item(slot, value)?;
        }
        Ok(channels)
    }
}
