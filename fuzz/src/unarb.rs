//! The inverse of `arbitrary`'s derived parsers, for the handful of shapes
//! the structured inputs use, so seed inputs can be written from Rust
//! values. `tests/seeds.rs` parses every seed back and compares, so a change
//! in `arbitrary`'s layout shows up as a failing test, not a useless corpus.
//!
//! The layout (arbitrary 1.x): integers little-endian at their size; `bool`
//! one byte (low bit); an enum a `u32` `x` choosing variant `(x * n) >> 32`
//! of `n`, then its fields; a struct its fields in order; a `Vec` each
//! element behind a `1` byte, then a `0` byte.

/// Bytes being written.
#[derive(Debug, Default)]
pub struct Writer {
    /// The input so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// The `u32` that makes a derived enum of `count` variants pick `index`.
    pub fn variant(&mut self, index: u32, count: u32) {
        assert!(index < count);
        let x = (u64::from(index) << 32).div_ceil(u64::from(count));
        (x as u32).write(self);
    }
}

/// A value that can be written as the input `arbitrary` parses back to it.
pub trait Unarbitrary {
    /// Appends the value's input bytes.
    fn write(&self, w: &mut Writer);

    /// The value's input bytes.
    fn to_input(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.out
    }
}

macro_rules! ints {
    ($($t:ty),*) => {$(
        impl Unarbitrary for $t {
            fn write(&self, w: &mut Writer) {
                w.out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
ints!(u8, u16, u32, u64);

impl Unarbitrary for bool {
    fn write(&self, w: &mut Writer) {
        w.out.push(u8::from(*self));
    }
}

impl<T: Unarbitrary> Unarbitrary for Vec<T> {
    fn write(&self, w: &mut Writer) {
        for item in self {
            w.out.push(1);
            item.write(w);
        }
        w.out.push(0);
    }
}

impl<T: Unarbitrary> Unarbitrary for Box<T> {
    fn write(&self, w: &mut Writer) {
        (**self).write(w);
    }
}

/// Writes the fields of a struct (or of an enum variant) in order.
#[macro_export]
macro_rules! write_fields {
    ($w:expr; $($field:expr),* $(,)?) => {{
        $( $crate::unarb::Unarbitrary::write($field, $w); )*
    }};
}
