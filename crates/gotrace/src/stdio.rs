//! Standard output and standard error without panics: every write can fail and the failure is
//! returned (`println!` panics on a closed pipe or a full disk). While tracing, each stream is
//! written by a thread of its own from a bounded queue ([`Writer`]), so a reader that stops
//! reading can never hold up detaching the probes.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn fd(self) -> i32 {
        match self {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Bit n set: descriptor n was closed when gotrace started. Rust's runtime reopens closed
/// standard descriptors on /dev/null before `main`, where writes would vanish without an error;
/// this is recorded earlier, from `.init_array`, so a closed stream can be reported as such.
static CLOSED_AT_START: AtomicU8 = AtomicU8::new(0);

extern "C" fn record_closed_std_fds() {
    for fd in [1, 2] {
        // SAFETY: F_GETFD only queries the descriptor table.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            CLOSED_AT_START.fetch_or(1 << fd, Ordering::Relaxed);
        }
    }
}

#[used]
#[link_section = ".init_array"]
static RECORD_CLOSED_STD_FDS: extern "C" fn() = record_closed_std_fds;

fn closed_at_start(stream: Stream) -> bool {
    CLOSED_AT_START.load(Ordering::Relaxed) & (1 << stream.fd()) != 0
}

/// A stream that could not be written.
#[derive(Clone, Debug)]
pub struct OutputError {
    pub stream: Stream,
    failure: Failure,
}

#[derive(Clone, Debug)]
enum Failure {
    ClosedAtStart,
    Io(Arc<io::Error>),
    Stuck(Duration),
}

impl OutputError {
    /// Stdout's reader went away (`| head`): a normal way for a session to end.
    pub fn is_stdout_closed_pipe(&self) -> bool {
        self.stream == Stream::Stdout
            && matches!(&self.failure, Failure::Io(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.stream.name();
        match &self.failure {
            Failure::ClosedAtStart => write!(
                f,
                "{name} is closed (gotrace was started with it closed, e.g. by `{}>&-`); redirect it to a file, or to /dev/null to discard it",
                self.stream.fd()
            ),
            Failure::Io(e) => write!(f, "writing to {name} failed: {e}"),
            Failure::Stuck(d) => write!(f, "{name} accepted nothing for {d:?} (nothing reads it)"),
        }
    }
}

impl std::error::Error for OutputError {}

/// Fails when `stream` was closed at start.
pub fn check_open(stream: Stream) -> Result<(), OutputError> {
    match closed_at_start(stream) {
        true => Err(OutputError {
            stream,
            failure: Failure::ClosedAtStart,
        }),
        false => Ok(()),
    }
}

/// Writes all of `bytes` to `stream` from this thread. With `within`, gives up when the stream
/// accepts nothing for that long.
pub fn write_now(
    stream: Stream,
    bytes: &[u8],
    within: Option<Duration>,
) -> Result<(), OutputError> {
    write_counted(stream, bytes, within).1
}

/// `write_now`, also saying how many bytes were written before a failure.
fn write_counted(
    stream: Stream,
    bytes: &[u8],
    within: Option<Duration>,
) -> (usize, Result<(), OutputError>) {
    let written = |rest: &[u8]| bytes.len() - rest.len();
    if let Err(e) = check_open(stream) {
        return (0, Err(e));
    }
    let fail = |failure| OutputError { stream, failure };
    let mut rest = bytes;
    while !rest.is_empty() {
        if let Some(limit) = within {
            let mut pfd = libc::pollfd {
                fd: stream.fd(),
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = limit.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: one valid pollfd, as the count says.
            match unsafe { libc::poll(&mut pfd, 1, ms) } {
                0 => return (written(rest), Err(fail(Failure::Stuck(limit)))),
                n if n < 0 => {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return (written(rest), Err(fail(Failure::Io(Arc::new(e)))));
                }
                // Writable, or an error the write below reports.
                _ => {}
            }
        }
        // SAFETY: `rest` is valid for reads of `rest.len()` bytes.
        let n = unsafe { libc::write(stream.fd(), rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return (written(rest), Err(fail(Failure::Io(Arc::new(e)))));
        }
        if n == 0 {
            let e = io::Error::from(io::ErrorKind::WriteZero);
            return (written(rest), Err(fail(Failure::Io(Arc::new(e)))));
        }
        rest = &rest[n as usize..];
    }
    (bytes.len(), Ok(()))
}

/// Text for stdout (`funcs`, `peek`, `demo`): waits for the reader like any command-line tool.
pub fn print(text: &str) -> Result<(), OutputError> {
    write_now(Stream::Stdout, text.as_bytes(), None)
}

/// Output for stdout once its writer is done (the JSON summary): waits for the reader a
/// bounded time, like last words.
pub fn print_last(bytes: &[u8]) -> Result<(), OutputError> {
    write_now(Stream::Stdout, bytes, Some(PATIENCE))
}

/// The stderr writer of a tracing session, once installed: messages then never wait.
static MESSAGES: OnceLock<Writer> = OnceLock::new();

/// One line on stderr (the newline is added). Control characters other than tab and newline
/// are escaped: messages quote names read from binaries, which must not drive the terminal.
pub fn say(text: &str) -> Result<(), OutputError> {
    let line = terminal_line(text);
    match MESSAGES.get() {
        Some(writer) if !writer.is_finished() => writer.send_message(line.into_bytes()),
        // After the session: bounded like the last words.
        Some(_) => write_now(Stream::Stderr, line.as_bytes(), Some(PATIENCE)),
        None => write_now(Stream::Stderr, line.as_bytes(), None),
    }
}

/// `text` and a newline, with control characters other than tab and newline escaped.
fn terminal_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        match c {
            '\n' | '\t' => line.push(c),
            c if c.is_control() => line.extend(c.escape_default()),
            c => line.push(c),
        }
    }
    line.push('\n');
    line
}

/// How long last words wait for a stream to take them.
const PATIENCE: Duration = Duration::from_secs(1);

/// `say` with `format!` arguments.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdio::say(&format!($($arg)*))
    };
}

/// `print` of one line with `format!` arguments.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdio::print(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Last words (gotrace is exiting): on stderr, or on stdout when stderr cannot take them,
/// waiting at most a second for either.
pub fn report(text: &str) {
    let line = terminal_line(text);
    if write_now(Stream::Stderr, line.as_bytes(), Some(PATIENCE)).is_err() {
        let _ = write_now(Stream::Stdout, line.as_bytes(), Some(PATIENCE));
    }
}

/// Installs `writer` as the destination of [`say`] for the rest of the process.
pub fn install_messages(writer: Writer) -> &'static Writer {
    MESSAGES.get_or_init(|| writer)
}

/// The calls a chunk of output holds, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Returned, or entered (`--no-return`).
    pub calls: u64,
    /// Panicked, or exited through runtime.Goexit.
    pub unreturned: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.calls += other.calls;
        self.unreturned += other.unreturned;
    }
}

impl Tally {
    pub fn of(lines: &[Line]) -> Tally {
        let count = |kind| lines.iter().filter(|&&l| l == kind).count() as u64;
        Tally {
            calls: count(Line::Call),
            unreturned: count(Line::Unreturned),
        }
    }
}

/// What one line of output reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Call,
    Unreturned,
    /// Not a call: the attach report, a warning, a loss (JSON lines).
    Message,
}

/// Bytes to write and, for output made of calls, what each of its lines reports (so that a
/// chunk cut short by a failure still counts the lines that made it out).
#[derive(Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub lines: Vec<Line>,
}

impl Chunk {
    fn tally(&self) -> Tally {
        Tally::of(&self.lines)
    }
}

/// What became of the calls handed to a [`Writer`].
#[derive(Clone, Debug, Default)]
pub struct Delivery {
    pub written: Tally,
    /// Not written because the stream failed.
    pub failed: Tally,
    /// Not written because gotrace stopped before the reader took them.
    pub stopped: Tally,
    pub error: Option<OutputError>,
}

/// A stream written by a thread of its own from a queue of at most `limit` bytes: the caller
/// never waits for the reader, and a full queue is the caller's cue to stop producing.
pub struct Writer {
    shared: Arc<Shared>,
    limit: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Chunk>,
    queued_bytes: usize,
    /// The chunk being written.
    busy: Option<Tally>,
    delivery: Delivery,
    /// No more chunks: the thread ends when the queue is empty.
    finished: bool,
    /// `finish` gave up waiting: whatever the thread still holds is counted as not written.
    abandoned: bool,
}

impl Writer {
    pub fn spawn(stream: Stream, limit: usize) -> Result<Writer, OutputError> {
        check_open(stream)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("gotrace-{}", stream.name()))
            .spawn(move || write_loop(stream, &theirs))
            .map_err(|e| OutputError {
                stream,
                failure: Failure::Io(Arc::new(e)),
            })?;
        Ok(Writer { shared, limit })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Queues `chunk`, or hands it back when the queue is full. After a failure the chunk's
    /// calls are counted as not written.
    pub fn try_send(&self, chunk: Chunk) -> Result<(), Chunk> {
        let mut state = self.lock();
        if state.delivery.error.is_some() {
            state.delivery.failed += chunk.tally();
            return Ok(());
        }
        if state.finished {
            state.delivery.stopped += chunk.tally();
            return Ok(());
        }
        if state.queued_bytes >= self.limit {
            return Err(chunk);
        }
        state.queued_bytes += chunk.bytes.len();
        state.queue.push_back(chunk);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Queues a message; one that does not fit is dropped (the reader is stuck).
    fn send_message(&self, bytes: Vec<u8>) -> Result<(), OutputError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        let _ = self.try_send(Chunk {
            bytes,
            lines: Vec::new(),
        });
        Ok(())
    }

    pub fn error(&self) -> Option<OutputError> {
        self.lock().delivery.error.clone()
    }

    fn is_finished(&self) -> bool {
        self.lock().finished
    }

    /// Stops taking chunks and waits until everything queued is written, the stream fails, or
    /// `deadline` passes; what is left then is counted as stopped.
    pub fn finish(&self, deadline: Instant) -> Delivery {
        let mut state = self.lock();
        state.finished = true;
        self.shared.changed.notify_all();
        loop {
            let idle = state.queue.is_empty() && state.busy.is_none();
            let now = Instant::now();
            if idle || state.delivery.error.is_some() || now >= deadline {
                break;
            }
            state = match self.shared.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state.abandoned = true;
        let mut left = state.busy.take().unwrap_or_default();
        for chunk in std::mem::take(&mut state.queue) {
            left += chunk.tally();
        }
        state.queued_bytes = 0;
        state.delivery.stopped += left;
        state.delivery.clone()
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the counters half-updated: take them as is.
    shared.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_loop(stream: Stream, shared: &Shared) {
    loop {
        let chunk = {
            let mut state = lock(shared);
            loop {
                if state.abandoned {
                    return;
                }
                if let Some(chunk) = state.queue.pop_front() {
                    state.queued_bytes -= chunk.bytes.len();
                    state.busy = Some(chunk.tally());
                    break chunk;
                }
                if state.finished {
                    return;
                }
                state = match shared.changed.wait(state) {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
            }
        };
        let (written, result) = write_counted(stream, &chunk.bytes, None);
        let mut state = lock(shared);
        if state.abandoned {
            return;
        }
        state.busy = None;
        match result {
            Ok(()) => state.delivery.written += chunk.tally(),
            Err(e) => {
                let out = chunk.bytes[..written]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count()
                    .min(chunk.lines.len());
                state.delivery.written += Tally::of(&chunk.lines[..out]);
                let mut failed = Tally::of(&chunk.lines[out..]);
                for rest in std::mem::take(&mut state.queue) {
                    failed += rest.tally();
                }
                state.queued_bytes = 0;
                state.delivery.failed += failed;
                state.delivery.error = Some(e);
                shared.changed.notify_all();
                return;
            }
        }
        shared.changed.notify_all();
    }
}
