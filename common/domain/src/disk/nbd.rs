//! The NBD server protocol (the Network Block Device's `proto.md`), as a core with no I/O and no
//! clock: the daemon hands it the bytes it read ([`Server::step`]) and gets back what they
//! mean (an option answered, a [`Command`] for the disk, the end of the session) with the
//! answer's bytes appended to its output. The daemon carries the commands out against the
//! guest's [`super::Disk`] and answers them with [`simple_reply`].
//!
//! What is served: the fixed-newstyle handshake (`NBD_OPT_EXPORT_NAME`, `NBD_OPT_GO` and
//! `NBD_OPT_INFO` with `NBD_INFO_EXPORT`, `NBD_INFO_NAME` and `NBD_INFO_BLOCK_SIZE`,
//! `NBD_OPT_ABORT`, `NBD_OPT_LIST`; every other option is answered `NBD_REP_ERR_UNSUP`, so no
//! structured replies, TLS or metadata contexts), then simple replies to `NBD_CMD_READ`,
//! `NBD_CMD_WRITE` (with `NBD_CMD_FLAG_FUA`), `NBD_CMD_FLUSH`, `NBD_CMD_WRITE_ZEROES` (carried
//! out as writes of zeroes, so they are journaled and replicated like any write) and
//! `NBD_CMD_DISC`. `NBD_CMD_TRIM` is not offered (`NBD_FLAG_SEND_TRIM` is clear) and is refused
//! with `NBD_EINVAL` like any command or flag not offered: a discard that did nothing on one
//! side and something on the other would make the replica differ.
//!
//! Bounds: a request carries at most [`MAX_PAYLOAD`] bytes. A longer read or write-zeroes is
//! refused (`NBD_EINVAL`, `NBD_EOVERFLOW`) and the session goes on; a longer write closes the
//! session ([`NbdError::PayloadTooLong`]), since its payload cannot be skipped safely. Offsets
//! are checked against the export's size (`NBD_EINVAL` for reads, `NBD_ENOSPC` for writes, as
//! the protocol asks). Option data beyond [`MAX_OPTION_DATA`] is skipped and answered
//! `NBD_REP_ERR_TOO_BIG`; a handshake of more than [`MAX_OPTIONS`] options, a bad magic
//! number, unknown client flags or an unknown export asked for with `NBD_OPT_EXPORT_NAME` end
//! the session with an [`NbdError`].

use std::fmt;

/// `NBDMAGIC`, the server's first word.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle greeting's second word, and every option's first.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// An option reply's magic.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// A request's magic.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// A simple reply's magic.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Bytes of the greeting.
pub const GREETING_LEN: usize = 18;
/// Bytes of a request header.
pub const REQUEST_LEN: usize = 28;
/// Bytes of a simple reply header.
pub const REPLY_LEN: usize = 16;
/// Bytes of an option header.
pub const OPTION_LEN: usize = 16;
/// Most bytes a request reads or writes (the protocol's default maximum payload, 32 MiB).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Most option data kept (an export name is at most 4096 bytes; `NBD_OPT_GO` adds its list).
pub const MAX_OPTION_DATA: u32 = 8192;
/// Most options in one handshake.
pub const MAX_OPTIONS: u32 = 256;
/// The size of the longest message [`Server::step`] may ask to see whole.
pub const MAX_MESSAGE: usize = REQUEST_LEN + MAX_PAYLOAD as usize;

/// Handshake flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1;
/// Handshake flag: no 124 zero bytes after `NBD_OPT_EXPORT_NAME` if the client agrees.
pub const FLAG_NO_ZEROES: u16 = 2;
/// Client flags.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1;
/// Client flag: no zeroes.
pub const FLAG_C_NO_ZEROES: u32 = 2;

/// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;

/// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Information types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// What this server offers.
pub const TRANSMISSION_FLAGS: u16 =
    FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_WRITE_ZEROES;

/// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command flags.
pub const CMD_FLAG_FUA: u16 = 1;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;

/// Error values of a reply.
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;
pub const EOVERFLOW: u32 = 75;
pub const ESHUTDOWN: u32 = 108;

/// The one export served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its name (the empty name, the default export, names it too).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Export {
    fn matches(&self, name: &[u8]) -> bool {
        name.is_empty() || name == self.name.as_bytes()
    }
}

/// Why a session ends against the client's will: the stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdError {
    /// A magic number is not what the protocol has there.
    BadMagic {
        /// Where.
        what: &'static str,
        /// Expected.
        expected: u64,
        /// Found.
        got: u64,
    },
    /// Client flags this server does not know.
    ClientFlags(u32),
    /// `NBD_OPT_EXPORT_NAME` of an export that is not here (it cannot be answered with an error).
    UnknownExport {
        /// Its length.
        len: u32,
    },
    /// More than [`MAX_OPTIONS`] options.
    TooManyOptions,
    /// A write longer than [`MAX_PAYLOAD`]: its payload cannot be skipped safely.
    PayloadTooLong {
        /// Its length.
        len: u32,
    },
}

impl fmt::Display for NbdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdError::BadMagic {
                what,
                expected,
                got,
            } => write!(
                f,
                "bad magic number in the {what}: expected {expected:#x}, got {got:#x} (not an NBD client, or out of step)"
            ),
            NbdError::ClientFlags(x) => write!(
                f,
                "unknown client flags {x:#x} (this server knows FIXED_NEWSTYLE and NO_ZEROES)"
            ),
            NbdError::UnknownExport { len } => write!(
                f,
                "NBD_OPT_EXPORT_NAME of an export this server does not have ({len} bytes of name)"
            ),
            NbdError::TooManyOptions => {
                write!(f, "more than {MAX_OPTIONS} options in one handshake")
            }
            NbdError::PayloadTooLong { len } => write!(
                f,
                "a write of {len} bytes: at most {MAX_PAYLOAD} (the stream cannot be resynchronised past its payload)"
            ),
        }
    }
}

impl std::error::Error for NbdError {}

/// What a command asks of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Read `len` bytes at `offset` (inside the export).
    Read { offset: u64, len: u32 },
    /// Write `data` at `offset` (inside the export); durable before the reply with `fua`.
    Write {
        offset: u64,
        data: &'a [u8],
        fua: bool,
    },
    /// Zeroes over `len` bytes at `offset` (inside the export, at most [`MAX_PAYLOAD`]).
    WriteZeroes { offset: u64, len: u32, fua: bool },
    /// Every write answered so far durable.
    Flush,
}

/// A command to carry out and answer (with its cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The client's cookie, for the reply.
    pub cookie: u64,
    /// What it asks.
    pub op: Op<'a>,
}

/// What the bytes meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Not a whole message yet: `need` bytes from the start of the input are wanted.
    Incomplete { need: usize },
    /// An option (or a refused command) answered in the output.
    Answered,
    /// The handshake is over: requests follow (the export's details are in the output).
    Ready,
    /// A command for the disk.
    Command(Command<'a>),
    /// The client ended the session (`NBD_OPT_ABORT`, answered; `NBD_CMD_DISC`): close.
    End,
}

/// [`Server::step`]'s answer: input bytes used, and what they meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// Bytes of the input used.
    pub used: usize,
    /// What they meant.
    pub event: Event<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    /// Skipping the data of an oversized option.
    Skip {
        opt: u32,
        left: u32,
    },
    Transmission,
    Ended,
}

/// One session's protocol state. See the module documentation.
#[derive(Debug, Clone)]
pub struct Server {
    export: Export,
    phase: Phase,
    no_zeroes: bool,
    options: u32,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// An option reply.
pub fn option_reply(out: &mut Vec<u8>, opt: u32, kind: u32, data: &[u8]) {
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// A simple reply's header (a successful read's data follows it).
pub fn simple_reply(out: &mut Vec<u8>, cookie: u64, error: u32) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

impl Server {
    /// A session serving `export`; its greeting is [`Server::greeting`].
    pub fn new(export: Export) -> Server {
        Server {
            export,
            phase: Phase::ClientFlags,
            no_zeroes: false,
            options: 0,
        }
    }

    /// A session whose handshake another process did (the standby handing its export over to
    /// the hsb-primary it execs): it goes on with the next request.
    pub fn transmitting_already(export: Export) -> Server {
        Server {
            phase: Phase::Transmission,
            ..Server::new(export)
        }
    }

    /// The newstyle greeting the server sends first.
    pub fn greeting(out: &mut Vec<u8>) {
        out.extend_from_slice(&NBDMAGIC.to_be_bytes());
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    }

    /// Whether the handshake is over.
    pub fn transmitting(&self) -> bool {
        self.phase == Phase::Transmission
    }

    /// The export.
    pub fn export(&self) -> &Export {
        &self.export
    }

    /// Read one message from the start of `input`, answering what the protocol answers here
    /// into `out`. An error ends the session (close the connection after sending `out`).
    pub fn step<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<Step<'a>, NbdError> {
        let more = |need| {
            Ok(Step {
                used: 0,
                event: Event::Incomplete { need },
            })
        };
        match self.phase {
            Phase::ClientFlags => {
                if input.len() < 4 {
                    return more(4);
                }
                let flags = be32(input);
                if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                    return Err(NbdError::ClientFlags(flags));
                }
                self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                self.phase = Phase::Options;
                Ok(Step {
                    used: 4,
                    event: Event::Answered,
                })
            }
            Phase::Options => {
                if input.len() < OPTION_LEN {
                    return more(OPTION_LEN);
                }
                let magic = be64(input);
                if magic != IHAVEOPT {
                    return Err(NbdError::BadMagic {
                        what: "option header",
                        expected: IHAVEOPT,
                        got: magic,
                    });
                }
                let (opt, len) = (be32(&input[8..]), be32(&input[12..]));
                self.options += 1;
                if self.options > MAX_OPTIONS {
                    return Err(NbdError::TooManyOptions);
                }
                if len > MAX_OPTION_DATA {
                    if opt == OPT_EXPORT_NAME {
                        return Err(NbdError::UnknownExport { len });
                    }
                    self.phase = Phase::Skip { opt, left: len };
                    return Ok(Step {
                        used: OPTION_LEN,
                        event: Event::Answered,
                    });
                }
                let end = OPTION_LEN + len as usize;
                if input.len() < end {
                    return more(end);
                }
                let event = self.option(opt, &input[OPTION_LEN..end], out)?;
                Ok(Step { used: end, event })
            }
            Phase::Skip { opt, left } => {
                if input.is_empty() {
                    return more(1);
                }
                let n = (left as usize).min(input.len());
                let left = left - n as u32;
                if left == 0 {
                    self.phase = Phase::Options;
                    option_reply(out, opt, REP_ERR_TOO_BIG, b"option data too long");
                } else {
                    self.phase = Phase::Skip { opt, left };
                }
                Ok(Step {
                    used: n,
                    event: Event::Answered,
                })
            }
            Phase::Transmission => self.request(input, out),
            Phase::Ended => Ok(Step {
                used: 0,
                event: Event::End,
            }),
        }
    }

    fn option(
        &mut self,
        opt: u32,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Event<'static>, NbdError> {
        match opt {
            OPT_EXPORT_NAME => {
                if !self.export.matches(data) {
                    return Err(NbdError::UnknownExport {
                        len: data.len() as u32,
                    });
                }
                out.extend_from_slice(&self.export.size.to_be_bytes());
                out.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                if !self.no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                self.phase = Phase::Transmission;
                return Ok(Event::Ready);
            }
            OPT_ABORT => {
                option_reply(out, opt, REP_ACK, &[]);
                self.phase = Phase::Ended;
                return Ok(Event::End);
            }
            OPT_LIST if !data.is_empty() => {
                option_reply(out, opt, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data");
            }
            OPT_LIST => {
                let name = self.export.name.as_bytes();
                let mut d = Vec::with_capacity(4 + name.len());
                d.extend_from_slice(&(name.len() as u32).to_be_bytes());
                d.extend_from_slice(name);
                option_reply(out, opt, REP_SERVER, &d);
                option_reply(out, opt, REP_ACK, &[]);
            }
            OPT_INFO | OPT_GO => return Ok(self.info(opt, data, out)),
            _ => option_reply(out, opt, REP_ERR_UNSUP, b"not supported by hsb"),
        }
        Ok(Event::Answered)
    }

    /// `NBD_OPT_INFO` and `NBD_OPT_GO`: name length, name, information requests.
    fn info(&mut self, opt: u32, data: &[u8], out: &mut Vec<u8>) -> Event<'static> {
        let parsed = (|| {
            let name_len = be32(data.get(..4)?) as usize;
            let name = data.get(4..4usize.checked_add(name_len)?)?;
            let rest = &data[4 + name_len..];
            let n = be16(rest.get(..2)?) as usize;
            let reqs = rest.get(2..)?;
            (reqs.len() == 2 * n).then_some((name, reqs))
        })();
        let Some((name, reqs)) = parsed else {
            option_reply(
                out,
                opt,
                REP_ERR_INVALID,
                b"malformed NBD_OPT_INFO or NBD_OPT_GO",
            );
            return Event::Answered;
        };
        if !self.export.matches(name) {
            option_reply(out, opt, REP_ERR_UNKNOWN, b"no such export");
            return Event::Answered;
        }
        let mut d = Vec::with_capacity(14);
        d.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        d.extend_from_slice(&self.export.size.to_be_bytes());
        d.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
        option_reply(out, opt, REP_INFO, &d);
        let asked = |t: u16| reqs.chunks(2).any(|c| be16(c) == t);
        if asked(INFO_NAME) {
            let mut d = INFO_NAME.to_be_bytes().to_vec();
            d.extend_from_slice(self.export.name.as_bytes());
            option_reply(out, opt, REP_INFO, &d);
        }
        // The protocol's default constraints, said outright: any alignment, 4 KiB preferred.
        let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
        for v in [1u32, 4096, MAX_PAYLOAD] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        option_reply(out, opt, REP_INFO, &d);
        option_reply(out, opt, REP_ACK, &[]);
        if opt == OPT_GO {
            self.phase = Phase::Transmission;
            return Event::Ready;
        }
        Event::Answered
    }

    /// A request of the transmission phase.
    fn request<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> Result<Step<'a>, NbdError> {
        if input.len() < REQUEST_LEN {
            return Ok(Step {
                used: 0,
                event: Event::Incomplete { need: REQUEST_LEN },
            });
        }
        let magic = be32(input);
        if magic != REQUEST_MAGIC {
            return Err(NbdError::BadMagic {
                what: "request header",
                expected: REQUEST_MAGIC.into(),
                got: magic.into(),
            });
        }
        let (flags, kind) = (be16(&input[4..]), be16(&input[6..]));
        let (cookie, offset, len) = (be64(&input[8..]), be64(&input[16..]), be32(&input[24..]));
        let mut used = REQUEST_LEN;
        let refuse = |out: &mut Vec<u8>, used, error| {
            simple_reply(out, cookie, error);
            Ok(Step {
                used,
                event: Event::Answered,
            })
        };
        let inside = offset
            .checked_add(len.into())
            .is_some_and(|end| end <= self.export.size);
        let fua = flags & CMD_FLAG_FUA != 0;
        let op = match kind {
            CMD_WRITE => {
                if len > MAX_PAYLOAD {
                    return Err(NbdError::PayloadTooLong { len });
                }
                used += len as usize;
                if input.len() < used {
                    return Ok(Step {
                        used: 0,
                        event: Event::Incomplete { need: used },
                    });
                }
                if flags & !CMD_FLAG_FUA != 0 {
                    return refuse(out, used, EINVAL);
                }
                if !inside {
                    return refuse(out, used, ENOSPC);
                }
                Op::Write {
                    offset,
                    data: &input[REQUEST_LEN..used],
                    fua,
                }
            }
            _ if flags & !(CMD_FLAG_FUA | CMD_FLAG_NO_HOLE) != 0
                || (kind != CMD_WRITE_ZEROES && flags & CMD_FLAG_NO_HOLE != 0) =>
            {
                return refuse(out, used, EINVAL)
            }
            CMD_READ if len > MAX_PAYLOAD || !inside => return refuse(out, used, EINVAL),
            CMD_READ => Op::Read { offset, len },
            CMD_WRITE_ZEROES if len > MAX_PAYLOAD => return refuse(out, used, EOVERFLOW),
            CMD_WRITE_ZEROES if !inside => return refuse(out, used, ENOSPC),
            CMD_WRITE_ZEROES => Op::WriteZeroes { offset, len, fua },
            CMD_FLUSH => Op::Flush,
            CMD_DISC => {
                self.phase = Phase::Ended;
                return Ok(Step {
                    used,
                    event: Event::End,
                });
            }
            // TRIM is not offered (see the module documentation), nor anything else.
            _ => return refuse(out, used, EINVAL),
        };
        Ok(Step {
            used,
            event: Event::Command(Command { cookie, op }),
        })
    }
}

#[cfg(test)]
#[path = "nbd_tests.rs"]
mod tests;
