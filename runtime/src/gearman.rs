//! The Gearman protocol, so that Gearman clients and workers in any language can use a
//! Troupe cluster as their job server (`troupe-node start --gearman HOST:PORT`).
//!
//! This module is the vocabulary only, with no I/O policy: the binary packets
//! ([`packet`]), the framing of a connection that mixes binary packets and the text admin
//! protocol ([`codec`]), and the rule that turns Gearman's opaque workloads into the JSON
//! values of Troupe tasks and back ([`data`]). The actors that serve it live in
//! `troupe_actors::gearman`.
//!
//! The reference is gearmand's `PROTOCOL` file: a packet is a 4-byte magic (`\0REQ` from
//! clients and workers, `\0RES` from the server), a 4-byte big-endian type, a 4-byte
//! big-endian body size, and the body: arguments separated by NUL bytes, the last of
//! which (the data) may itself hold NULs.

pub mod codec;
pub mod data;
pub mod packet;

pub use codec::{CodecError, Frame, GearmanCodec};
pub use packet::{Magic, PacketType, ProtocolError, Request};
