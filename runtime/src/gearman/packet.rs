//! Gearman packet types, requests parsed from packets, and responses built as bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::job::spec::Priority;

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    /// `\0REQ`: from a client or worker.
    Req,
    /// `\0RES`: from the server.
    Res,
}

impl Magic {
    /// The four bytes on the wire.
    pub fn bytes(self) -> &'static [u8; 4] {
        match self {
            Magic::Req => b"\0REQ",
            Magic::Res => b"\0RES",
        }
    }
}

macro_rules! packet_types {
    ($($name:ident = $code:literal, $args:literal;)*) => {
        /// The packet types of the protocol, by their numbers on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, missing_docs)]
        pub enum PacketType { $($name),* }

        impl PacketType {
            /// The type with number `code`, if the protocol has one.
            pub fn from_code(code: u32) -> Option<Self> {
                match code { $($code => Some(PacketType::$name),)* _ => None }
            }
            /// Its number on the wire.
            pub fn code(self) -> u32 {
                match self { $(PacketType::$name => $code),* }
            }
            /// How many arguments its body has (the last may hold NUL bytes).
            pub fn arg_count(self) -> usize {
                match self { $(PacketType::$name => $args),* }
            }
            /// Its name in gearmand's protocol description.
            pub fn name(self) -> &'static str {
                match self { $(PacketType::$name => stringify!($name)),* }
            }
        }
    };
}

packet_types! {
    CAN_DO = 1, 1;
    CANT_DO = 2, 1;
    RESET_ABILITIES = 3, 0;
    PRE_SLEEP = 4, 0;
    NOOP = 6, 0;
    SUBMIT_JOB = 7, 3;
    JOB_CREATED = 8, 1;
    GRAB_JOB = 9, 0;
    NO_JOB = 10, 0;
    JOB_ASSIGN = 11, 3;
    WORK_STATUS = 12, 3;
    WORK_COMPLETE = 13, 2;
    WORK_FAIL = 14, 1;
    GET_STATUS = 15, 1;
    ECHO_REQ = 16, 1;
    ECHO_RES = 17, 1;
    SUBMIT_JOB_BG = 18, 3;
    ERROR = 19, 2;
    STATUS_RES = 20, 5;
    SUBMIT_JOB_HIGH = 21, 3;
    SET_CLIENT_ID = 22, 1;
    CAN_DO_TIMEOUT = 23, 2;
    ALL_YOURS = 24, 0;
    WORK_EXCEPTION = 25, 2;
    OPTION_REQ = 26, 1;
    OPTION_RES = 27, 1;
    WORK_DATA = 28, 2;
    WORK_WARNING = 29, 2;
    GRAB_JOB_UNIQ = 30, 0;
    JOB_ASSIGN_UNIQ = 31, 4;
    SUBMIT_JOB_HIGH_BG = 32, 3;
    SUBMIT_JOB_LOW = 33, 3;
    SUBMIT_JOB_LOW_BG = 34, 3;
    SUBMIT_JOB_SCHED = 35, 8;
    SUBMIT_JOB_EPOCH = 36, 4;
    SUBMIT_REDUCE_JOB = 37, 4;
    SUBMIT_REDUCE_JOB_BACKGROUND = 38, 4;
    GRAB_JOB_ALL = 39, 0;
    JOB_ASSIGN_ALL = 40, 5;
    GET_STATUS_UNIQUE = 41, 1;
    STATUS_RES_UNIQUE = 42, 6;
}

/// A packet whose body is not yet split into arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    /// Its direction.
    pub magic: Magic,
    /// Its type number (possibly one the protocol does not have).
    pub code: u32,
    /// Its body.
    pub body: Bytes,
}

/// Why a well-framed packet cannot be served. The connection answers with an `ERROR`
/// packet (code [`ProtocolError::code`]) and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No such packet type.
    #[error("unknown packet type {0}")]
    UnknownType(u32),
    /// A `\0RES` packet sent to the server, or a server-to-client type sent as a request.
    #[error("{0} is a server response; a client or worker cannot send it")]
    WrongDirection(&'static str),
    /// Fewer NUL-separated arguments than the type has.
    #[error("{kind} needs {want} arguments, got {got}")]
    Arguments {
        /// The packet type.
        kind: &'static str,
        /// Arguments the type has.
        want: usize,
        /// Arguments found.
        got: usize,
    },
    /// A name (function, handle, unique id, option) that is not UTF-8 text.
    #[error("{0}: the {1} is not UTF-8 text")]
    NotText(&'static str, &'static str),
    /// A number argument that does not parse.
    #[error("{0}: {1:?} is not a number")]
    NotANumber(&'static str, String),
    /// A response type sent with request magic.
    #[error("{0} is a response, not a request")]
    NotARequest(&'static str),
    /// A type Troupe does not serve (scheduled and map-reduce submissions).
    #[error("{0} is not supported by Troupe (see \"Moving from gearmand\" in the docs)")]
    Unsupported(&'static str),
}

impl ProtocolError {
    /// The error code sent in the `ERROR` packet (gearmand's names where it has them).
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::UnknownType(_) => "UNKNOWN_COMMAND",
            ProtocolError::WrongDirection(_) => "INVALID_MAGIC",
            ProtocolError::NotARequest(_) => "INVALID_COMMAND",
            ProtocolError::Arguments { .. } => "INVALID_PACKET",
            ProtocolError::NotText(..) | ProtocolError::NotANumber(..) => "INVALID_ARGUMENT",
            ProtocolError::Unsupported(_) => "NOT_SUPPORTED",
        }
    }

    /// A short label for the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProtocolError::UnknownType(_) => "unknown_type",
            ProtocolError::WrongDirection(_) | ProtocolError::NotARequest(_) => "wrong_direction",
            ProtocolError::Arguments { .. } => "arguments",
            ProtocolError::NotText(..) | ProtocolError::NotANumber(..) => "argument",
            ProtocolError::Unsupported(_) => "unsupported",
        }
    }
}

/// A job submission from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// The function (a Troupe task name).
    pub function: String,
    /// The client's unique id; jobs with the same function and unique id coalesce.
    pub unique: String,
    /// The workload.
    pub data: Bytes,
    /// Priority class of the submit type.
    pub priority: Priority,
    /// True for the `_BG` forms: the client does not wait.
    pub background: bool,
}

/// What a client or worker asks, parsed from a request packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Worker: can run `function` (with a time limit in seconds for `CAN_DO_TIMEOUT`).
    CanDo(String, Option<u32>),
    /// Worker: no longer runs `function`.
    CantDo(String),
    /// Worker: runs nothing.
    ResetAbilities,
    /// Worker: about to sleep; send `NOOP` when there is work.
    PreSleep,
    /// Worker: give me a job (`JOB_ASSIGN`).
    GrabJob,
    /// Worker: give me a job with its unique id (`JOB_ASSIGN_UNIQ`).
    GrabJobUniq,
    /// Worker: give me a job with everything (gearmand answers `JOB_ASSIGN_UNIQ` for a
    /// job that is not map-reduce, and so does Troupe).
    GrabJobAll,
    /// Client: a job.
    Submit(Submit),
    /// Worker: progress of a job.
    WorkStatus {
        /// The job handle.
        handle: String,
        /// Done so far.
        numerator: u64,
        /// Out of.
        denominator: u64,
    },
    /// Worker: the job succeeded with this result.
    WorkComplete(String, Bytes),
    /// Worker: the job failed.
    WorkFail(String),
    /// Worker: the job failed with this exception.
    WorkException(String, Bytes),
    /// Worker: partial data for the client.
    WorkData(String, Bytes),
    /// Worker: a warning for the client.
    WorkWarning(String, Bytes),
    /// Client: status of a background job by handle.
    GetStatus(String),
    /// Client: status of a job by unique id.
    GetStatusUnique(String),
    /// Anyone: echo this back.
    Echo(Bytes),
    /// Worker: its id in `workers` listings.
    SetClientId(String),
    /// Client: turn on an option (`exceptions`).
    Option(String),
    /// Worker: unused by gearmand; accepted and ignored.
    AllYours,
}

fn text(kind: PacketType, what: &'static str, b: &Bytes) -> Result<String, ProtocolError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtocolError::NotText(kind.name(), what))
}

fn number<T: std::str::FromStr>(kind: PacketType, b: &Bytes) -> Result<T, ProtocolError> {
    let s = String::from_utf8_lossy(b);
    s.trim()
        .parse()
        .map_err(|_| ProtocolError::NotANumber(kind.name(), s.into_owned()))
}

/// Splits `body` into exactly `n` arguments: the first `n - 1` end at a NUL, the last is
/// the rest (it may hold NULs).
pub fn split_args(body: &Bytes, n: usize) -> Option<Vec<Bytes>> {
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return Some(out);
    }
    let mut start = 0;
    for _ in 0..n - 1 {
        let at = body[start..].iter().position(|&b| b == 0)? + start;
        out.push(body.slice(start..at));
        start = at + 1;
    }
    out.push(body.slice(start..));
    Some(out)
}

impl Request {
    /// Parses a request packet.
    pub fn parse(p: &RawPacket) -> Result<Self, ProtocolError> {
        let kind = PacketType::from_code(p.code).ok_or(ProtocolError::UnknownType(p.code))?;
        use PacketType as T;
        if p.magic == Magic::Res {
            return Err(ProtocolError::WrongDirection(kind.name()));
        }
        // A response type with request magic: gearmand's INVALID_COMMAND.
        if matches!(
            kind,
            T::NOOP
                | T::JOB_CREATED
                | T::NO_JOB
                | T::JOB_ASSIGN
                | T::ECHO_RES
                | T::ERROR
                | T::STATUS_RES
                | T::OPTION_RES
                | T::JOB_ASSIGN_UNIQ
                | T::JOB_ASSIGN_ALL
                | T::STATUS_RES_UNIQUE
        ) {
            return Err(ProtocolError::NotARequest(kind.name()));
        }
        let want = kind.arg_count();
        let a = split_args(&p.body, want)
            .or_else(|| {
                // As gearmand: a packet whose last argument is data may leave it out
                // (Perl's Gearman::Worker does, for a result of '' or '0').
                let data_last = matches!(
                    kind,
                    T::WORK_COMPLETE
                        | T::WORK_EXCEPTION
                        | T::WORK_DATA
                        | T::WORK_WARNING
                        | T::SUBMIT_JOB
                        | T::SUBMIT_JOB_BG
                        | T::SUBMIT_JOB_HIGH
                        | T::SUBMIT_JOB_HIGH_BG
                        | T::SUBMIT_JOB_LOW
                        | T::SUBMIT_JOB_LOW_BG
                );
                let mut a = split_args(&p.body, want.checked_sub(1).filter(|_| data_last)?)?;
                a.push(Bytes::new());
                Some(a)
            })
            .ok_or_else(|| ProtocolError::Arguments {
                kind: kind.name(),
                want,
                got: p.body.iter().filter(|&&b| b == 0).count() + 1,
            })?;
        let submit = |priority, background| -> Result<Request, ProtocolError> {
            Ok(Request::Submit(Submit {
                function: text(kind, "function name", &a[0])?,
                unique: text(kind, "unique id", &a[1])?,
                data: a[2].clone(),
                priority,
                background,
            }))
        };
        Ok(match kind {
            T::CAN_DO => Request::CanDo(text(kind, "function name", &a[0])?, None),
            T::CAN_DO_TIMEOUT => Request::CanDo(
                text(kind, "function name", &a[0])?,
                Some(number(kind, &a[1])?),
            ),
            T::CANT_DO => Request::CantDo(text(kind, "function name", &a[0])?),
            T::RESET_ABILITIES => Request::ResetAbilities,
            T::PRE_SLEEP => Request::PreSleep,
            T::GRAB_JOB => Request::GrabJob,
            T::GRAB_JOB_UNIQ => Request::GrabJobUniq,
            T::GRAB_JOB_ALL => Request::GrabJobAll,
            T::SUBMIT_JOB => submit(Priority::Normal, false)?,
            T::SUBMIT_JOB_BG => submit(Priority::Normal, true)?,
            T::SUBMIT_JOB_HIGH => submit(Priority::High, false)?,
            T::SUBMIT_JOB_HIGH_BG => submit(Priority::High, true)?,
            T::SUBMIT_JOB_LOW => submit(Priority::Low, false)?,
            T::SUBMIT_JOB_LOW_BG => submit(Priority::Low, true)?,
            T::SUBMIT_JOB_SCHED
            | T::SUBMIT_JOB_EPOCH
            | T::SUBMIT_REDUCE_JOB
            | T::SUBMIT_REDUCE_JOB_BACKGROUND => {
                return Err(ProtocolError::Unsupported(kind.name()))
            }
            T::WORK_STATUS => Request::WorkStatus {
                handle: text(kind, "job handle", &a[0])?,
                numerator: number(kind, &a[1])?,
                denominator: number(kind, &a[2])?,
            },
            T::WORK_COMPLETE => {
                Request::WorkComplete(text(kind, "job handle", &a[0])?, a[1].clone())
            }
            T::WORK_FAIL => Request::WorkFail(text(kind, "job handle", &a[0])?),
            T::WORK_EXCEPTION => {
                Request::WorkException(text(kind, "job handle", &a[0])?, a[1].clone())
            }
            T::WORK_DATA => Request::WorkData(text(kind, "job handle", &a[0])?, a[1].clone()),
            T::WORK_WARNING => Request::WorkWarning(text(kind, "job handle", &a[0])?, a[1].clone()),
            T::GET_STATUS => Request::GetStatus(text(kind, "job handle", &a[0])?),
            T::GET_STATUS_UNIQUE => Request::GetStatusUnique(text(kind, "unique id", &a[0])?),
            T::ECHO_REQ => Request::Echo(a[0].clone()),
            T::SET_CLIENT_ID => Request::SetClientId(text(kind, "client id", &a[0])?),
            T::OPTION_REQ => Request::Option(text(kind, "option", &a[0])?),
            T::ALL_YOURS => Request::AllYours,
            // Responses were refused above.
            _ => return Err(ProtocolError::NotARequest(kind.name())),
        })
    }
}

/// A response packet: `kind` with `args` joined by NULs.
pub fn response(kind: PacketType, args: &[&[u8]]) -> Bytes {
    let size: usize = args.iter().map(|a| a.len()).sum::<usize>() + args.len().saturating_sub(1);
    let mut b = BytesMut::with_capacity(12 + size);
    b.put_slice(Magic::Res.bytes());
    b.put_u32(kind.code());
    b.put_u32(size as u32);
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            b.put_u8(0);
        }
        b.put_slice(a);
    }
    b.freeze()
}

/// A request packet (for clients and workers written in Rust, such as the tests').
pub fn request(kind: PacketType, args: &[&[u8]]) -> Bytes {
    let mut b = BytesMut::from(&response(kind, args)[..]);
    b[..4].copy_from_slice(Magic::Req.bytes());
    b.freeze()
}

/// An `ERROR` packet for `e`.
pub fn error_packet(e: &ProtocolError) -> Bytes {
    response(
        PacketType::ERROR,
        &[e.code().as_bytes(), e.to_string().as_bytes()],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: PacketType, args: &[&[u8]]) -> RawPacket {
        let b = request(kind, args);
        RawPacket {
            magic: Magic::Req,
            code: kind.code(),
            body: b.slice(12..),
        }
    }

    #[test]
    fn submits_parse_with_their_priority_and_mode() {
        let r = Request::parse(&raw(
            PacketType::SUBMIT_JOB_LOW_BG,
            &[b"rev", b"u1", b"a\0b"],
        ));
        assert_eq!(
            r,
            Ok(Request::Submit(Submit {
                function: "rev".into(),
                unique: "u1".into(),
                data: Bytes::from_static(b"a\0b"),
                priority: Priority::Low,
                background: true,
            }))
        );
    }

    #[test]
    fn the_last_argument_keeps_its_nuls_and_short_bodies_are_refused() {
        let a = split_args(&Bytes::from_static(b"h\0x\0y"), 2).unwrap();
        assert_eq!(
            a,
            vec![Bytes::from_static(b"h"), Bytes::from_static(b"x\0y")]
        );
        let e = Request::parse(&RawPacket {
            magic: Magic::Req,
            code: PacketType::SUBMIT_JOB.code(),
            body: Bytes::from_static(b"only-one"),
        });
        assert!(matches!(
            e,
            Err(ProtocolError::Arguments {
                want: 3,
                got: 1,
                ..
            })
        ));
    }

    #[test]
    fn responses_and_unknown_types_are_refused_as_requests() {
        let e = Request::parse(&RawPacket {
            magic: Magic::Res,
            code: PacketType::SUBMIT_JOB.code(),
            body: Bytes::from_static(b"f\0\0x"),
        });
        assert_eq!(e, Err(ProtocolError::WrongDirection("SUBMIT_JOB")));
        assert_eq!(
            Request::parse(&raw(PacketType::NOOP, &[])),
            Err(ProtocolError::NotARequest("NOOP"))
        );
        let e = Request::parse(&RawPacket {
            magic: Magic::Req,
            code: 999,
            body: Bytes::new(),
        });
        assert_eq!(e, Err(ProtocolError::UnknownType(999)));
        assert_eq!(e.unwrap_err().code(), "UNKNOWN_COMMAND");
    }

    #[test]
    fn numbers_and_text_are_checked() {
        let e = Request::parse(&raw(PacketType::WORK_STATUS, &[b"H:1", b"x", b"2"]));
        assert!(matches!(e, Err(ProtocolError::NotANumber(..))));
        let e = Request::parse(&raw(PacketType::CAN_DO, &[b"\xff\xfe"]));
        assert!(matches!(e, Err(ProtocolError::NotText(..))));
        assert_eq!(
            Request::parse(&raw(PacketType::CAN_DO_TIMEOUT, &[b"f", b"30"])),
            Ok(Request::CanDo("f".into(), Some(30)))
        );
    }

    #[test]
    fn a_response_is_framed_as_gearmand_frames_it() {
        let p = response(PacketType::JOB_CREATED, &[b"H:n1:1"]);
        assert_eq!(&p[..4], b"\0RES");
        assert_eq!(u32::from_be_bytes([p[4], p[5], p[6], p[7]]), 8);
        assert_eq!(u32::from_be_bytes([p[8], p[9], p[10], p[11]]), 6);
        assert_eq!(&p[12..], b"H:n1:1");
        let p = response(PacketType::NOOP, &[]);
        assert_eq!(p.len(), 12);
    }
}
