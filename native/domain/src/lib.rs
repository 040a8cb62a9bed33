//! The compiled core of the engine's hot path, with the behaviour of the pure-Python
//! domain it mirrors (the readable definition, and what the tests compare it with):
//!
//! - `read_valid_event` (`event.rs`): an InventoryEvent payload straight to the
//!   domain's `InventoryEvent` when it is certainly valid, or None for the reference
//!   path (`Codec.decode_event_record` then `parse_event`) to decide;
//! - `CompiledPublisher` (`publisher.rs`): `SnapshotPublisher.publish` and the snapshot
//!   encoding in one call.

use pyo3::prelude::*;

mod event;
mod publisher;

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<publisher::CompiledPublisher>()?;
    module.add_class::<publisher::SnapshotTopics>()?;
    module.add_function(wrap_pyfunction!(event::read_valid_event, module)?)?;
    Ok(())
}
