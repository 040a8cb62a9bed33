//! The Avro binary of the engine's hot path, shared by the compiled codec (`native/src`)
//! and the compiled domain core (`native/domain`): the `long` and `string` encodings the
//! snapshot contracts are made of, and the InventoryEvent reader with its refusals.

/// A `long`: zigzag, then base-128 varint.
pub fn put_long(out: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n > 0x7F {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A `string`: its UTF-8 length as a long, then the bytes.
pub fn put_str(out: &mut Vec<u8>, text: &str) {
    put_long(out, text.len() as i64);
    out.extend_from_slice(text.as_bytes());
}

/// Why a record was refused: the reason of the `InvalidEvent` it becomes.
pub enum Refusal {
    EndsEarly,
    TooManyBytes,
    TooLarge,
    Length(&'static str, i64),
    NotUtf8(&'static str),
    Branch(&'static str, i64),
    EventType(i64, usize),
    Restockable(u8),
}

impl Refusal {
    pub fn reason(&self) -> String {
        match self {
            Refusal::EndsEarly => "the record ends early".to_string(),
            Refusal::TooManyBytes => "a number is encoded in more than 10 bytes".to_string(),
            Refusal::TooLarge => "a number is larger than an Avro long".to_string(),
            Refusal::Length(name, length) => {
                format!("field '{name}' has an impossible length {length}")
            }
            Refusal::NotUtf8(name) => format!("field '{name}' is not valid UTF-8"),
            Refusal::Branch(name, index) => {
                format!("field '{name}' has union index {index}, not 0 or 1")
            }
            Refusal::EventType(index, symbols) => {
                format!("event_type index {index} is not one of the {symbols} symbols")
            }
            Refusal::Restockable(flag) => {
                format!("field 'restockable' has byte {flag}, not 0 or 1")
            }
        }
    }
}

pub struct Reader<'a> {
    pub data: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn byte(&mut self) -> Result<u8, Refusal> {
        let byte = *self.data.get(self.pos).ok_or(Refusal::EndsEarly)?;
        self.pos += 1;
        Ok(byte)
    }

    /// A zigzag varint: at most 10 bytes, at most 64 bits.
    pub fn long(&mut self) -> Result<i64, Refusal> {
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(((first >> 1) as i64) ^ -((first & 1) as i64));
        }
        let mut result = (first & 0x7F) as u128;
        let mut shift = 7u32;
        loop {
            let byte = self.byte()?;
            result |= ((byte & 0x7F) as u128) << shift;
            if byte < 0x80 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(Refusal::TooManyBytes);
            }
        }
        if result >= 1u128 << 64 {
            return Err(Refusal::TooLarge);
        }
        let bits = result as u64;
        Ok(((bits >> 1) as i64) ^ -((bits & 1) as i64))
    }

    pub fn string(&mut self, name: &'static str) -> Result<&'a str, Refusal> {
        let length = self.long()?;
        let end = self.pos as i128 + length as i128;
        if length < 0 || end > self.data.len() as i128 {
            return Err(Refusal::Length(name, length));
        }
        let text = &self.data[self.pos..end as usize];
        self.pos = end as usize;
        std::str::from_utf8(text).map_err(|_| Refusal::NotUtf8(name))
    }

    /// A `["null", T]` union: whether T follows.
    pub fn branch(&mut self, name: &'static str) -> Result<bool, Refusal> {
        match self.long()? {
            0 => Ok(false),
            1 => Ok(true),
            index => Err(Refusal::Branch(name, index)),
        }
    }
}

pub const OPTIONAL_STRINGS: [&str; 5] = [
    "reason",
    "transfer_id",
    "counterparty_location_id",
    "reservation_id",
    "channel",
];

/// The fields of one InventoryEvent, read before any Python object is made.
pub struct EventFields<'a> {
    pub event_id: &'a str,
    pub event_type: usize,
    pub occurred_at: i64,
    pub source: &'a str,
    pub sku: &'a str,
    pub location_id: &'a str,
    pub quantity: i64,
    pub optional: [Option<&'a str>; 5],
    pub expires_at: Option<i64>,
    pub restockable: bool,
}

pub fn read_fields<'a>(
    reader: &mut Reader<'a>,
    symbols: usize,
) -> Result<EventFields<'a>, Refusal> {
    let event_id = reader.string("event_id")?;
    let index = reader.long()?;
    if index < 0 || index >= symbols as i64 {
        return Err(Refusal::EventType(index, symbols));
    }
    let occurred_at = reader.long()?;
    let source = reader.string("source")?;
    let sku = reader.string("sku")?;
    let location_id = reader.string("location_id")?;
    let quantity = reader.long()?;
    let mut optional = [None; 5];
    for (slot, name) in optional.iter_mut().zip(OPTIONAL_STRINGS) {
        if reader.branch(name)? {
            *slot = Some(reader.string(name)?);
        }
    }
    let expires_at = if reader.branch("expires_at")? {
        Some(reader.long()?)
    } else {
        None
    };
    let flag = reader.byte()?;
    if flag > 1 {
        return Err(Refusal::Restockable(flag));
    }
    Ok(EventFields {
        event_id,
        event_type: index as usize,
        occurred_at,
        source,
        sku,
        location_id,
        quantity,
        optional,
        expires_at,
        restockable: flag == 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs_are_zigzag_varints() {
        let cases: [(i64, &[u8]); 6] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[0x7E]),
            (64, &[0x80, 0x01]),
            (
                i64::MIN,
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            put_long(&mut out, value);
            assert_eq!(out, expected, "{value}");
        }
    }

    #[test]
    fn strings_carry_their_byte_length() {
        let mut out = Vec::new();
        put_str(&mut out, "é|");
        assert_eq!(out, [6, 0xC3, 0xA9, b'|']);
    }
}
