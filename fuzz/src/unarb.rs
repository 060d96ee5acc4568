//! The inverse of `arbitrary`'s derived parsers, for the handful of shapes
//! the structured inputs use, so seed inputs can be written from Rust
//! values. `tests/seeds.rs` parses every seed back and compares, so a change
//! in `arbitrary`'s layout shows up as a failing test, not a useless corpus.
//! The input types are declared through [`unarbitrary!`](crate::unarbitrary),
//! so their writer is generated from the same field list the derive reads.
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

/// Declares a structured-input type and its [`Unarbitrary`] mirror in one
/// place, so each struct or enum states its fields once and the writer
/// cannot drift from what `#[derive(Arbitrary)]` parses.
///
/// Takes one `struct` with named fields, or one `enum` whose variants are
/// units, single-field tuples or named fields, written as ordinary Rust
/// (attributes and doc comments included; put `#[derive(Arbitrary, ...)]`
/// on it as usual). Emits the item unchanged plus `impl Unarbitrary`
/// writing, as `arbitrary` 1.x reads them: a struct's fields in order; an
/// enum's variant index among all variants ([`Writer::variant`]), then that
/// variant's fields in order.
#[macro_export]
macro_rules! unarbitrary {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $fty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field : $fty ),*
        }

        impl $crate::unarb::Unarbitrary for $name {
            fn write(&self, w: &mut $crate::unarb::Writer) {
                $( $crate::unarb::Unarbitrary::write(&self.$field, w); )*
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident { $($body:tt)* }
    ) => {
        $(#[$meta])*
        $vis enum $name { $($body)* }

        impl $crate::unarb::Unarbitrary for $name {
            fn write(&self, w: &mut $crate::unarb::Writer) {
                $crate::unarbitrary!(@arms self, w, [], [], $($body)*);
            }
        }
    };

    // The enum's variants, one at a time: `[$n]` holds a `1` per variant
    // seen (so `0 $(+ $n)*` is the next index), `[$arms]` the match arms.
    (@arms $s:ident, $w:ident, [$($n:tt)*], [$($arms:tt)*],
        $(#[$vmeta:meta])* $variant:ident {
            $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)?
        }
        $(, $($rest:tt)*)?
    ) => {
        $crate::unarbitrary!(@arms $s, $w, [$($n)* 1], [$($arms)*
            Self::$variant { $($field),* } => {
                $w.variant(0 $(+ $n)*, COUNT);
                $( $crate::unarb::Unarbitrary::write($field, $w); )*
            }
        ], $($($rest)*)?);
    };
    (@arms $s:ident, $w:ident, [$($n:tt)*], [$($arms:tt)*],
        $(#[$vmeta:meta])* $variant:ident ( $(#[$tmeta:meta])* $tty:ty )
        $(, $($rest:tt)*)?
    ) => {
        $crate::unarbitrary!(@arms $s, $w, [$($n)* 1], [$($arms)*
            Self::$variant(field) => {
                $w.variant(0 $(+ $n)*, COUNT);
                $crate::unarb::Unarbitrary::write(field, $w);
            }
        ], $($($rest)*)?);
    };
    (@arms $s:ident, $w:ident, [$($n:tt)*], [$($arms:tt)*],
        $(#[$vmeta:meta])* $variant:ident
        $(, $($rest:tt)*)?
    ) => {
        $crate::unarbitrary!(@arms $s, $w, [$($n)* 1], [$($arms)*
            Self::$variant => $w.variant(0 $(+ $n)*, COUNT),
        ], $($($rest)*)?);
    };
    // Every variant seen: their number is the count the index is taken of.
    (@arms $s:ident, $w:ident, [$($n:tt)*], [$($arms:tt)*], ) => {
        const COUNT: u32 = 0 $(+ $n)*;
        match $s {
            $($arms)*
        }
    };
}
