//! Avro binary encoding of the two primitives the snapshot contracts are made of, shared
//! by the compiled codec (`native/src`) and the compiled publisher (`native/publisher`).

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
