//! The event loop of a session: events handed to the sink in batches, the stop signals looked
//! at between chunks, losses and calls over `--max-rate` said while tracing.

use super::{report_losses, CallSink, Flow, BATCH};
use anyhow::Result;
use gotrace_kernel::{Counters, EventStream, InFlightNow, Session, Waiter, Wake};
use gotrace_output::{Note, Record};
use gotrace_plan::ProbePlan;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// How often the BPF side's loss counters are checked while tracing.
const COUNTER_INTERVAL: Duration = Duration::from_secs(1);
/// Events decoded between two looks at the stop signals: well under a millisecond of work on an
/// idle machine, a few when gotrace gets a fraction of a CPU under overload (a batch of 4096 then
/// took half a second), so a stop is seen promptly however events come.
const CHUNK: usize = 64;

/// Hands events to the sink until a stop signal, the output closing, or `done`; says what the
/// BPF side lost on the way.
pub(super) fn pump(
    (session, plan): (&Session, &ProbePlan),
    over_rate_named: &mut [bool],
    events: &EventStream<'_>,
    waiter: &Waiter,
    sink: &RefCell<&mut dyn CallSink>,
    done: impl Fn() -> bool,
) -> Result<()> {
    let mut reported = Counters::default();
    let mut last_check = Instant::now();
    let mut flow = Flow::Open;
    let mut in_flight = InFlightWatch::default();
    let mut drained_at = Instant::now();
    loop {
        let wake = match flow {
            // The kernel counts what does not fit in the ring buffer meanwhile.
            Flow::Full => waiter.wait_for_stop()?,
            _ => waiter.wait()?,
        };
        if wake == Wake::Stop {
            return Ok(());
        }
        if flow != Flow::Full {
            match consume_until_stop(events, waiter)? {
                Consumed::Stop => return Ok(()),
                Consumed::Drained => drained_at = Instant::now(),
                Consumed::More => {}
            }
        }
        flow = sink.borrow_mut().flush(false);
        if flow == Flow::Closed || done() {
            return Ok(());
        }
        if last_check.elapsed() >= COUNTER_INTERVAL {
            last_check = Instant::now();
            in_flight.look(session, *sink.borrow_mut(), drained_at);
            // A failed stderr stops the session like a failed stdout; the caller says so.
            let counters = session.counters()?;
            if counters.over_rate > reported.over_rate {
                let sink = &mut **sink.borrow_mut();
                if name_over_rate(session, plan, over_rate_named, sink).is_err() {
                    return Ok(());
                }
            }
            if report_losses(&counters, &mut reported, *sink.borrow_mut()).is_err() {
                return Ok(());
            }
        }
    }
}

/// Says, once per function, that it went over `--max-rate` and its calls beyond the rate are
/// counted in the kernel.
pub(super) fn name_over_rate(
    session: &Session,
    plan: &ProbePlan,
    named: &mut [bool],
    sink: &mut dyn CallSink,
) -> Result<()> {
    let counts = session.over_rate(plan.functions.len())?;
    for ((function, count), named) in plan.functions.iter().zip(counts).zip(named) {
        if count > 0 && !*named {
            *named = true;
            let message = format!(
                "{} is called more than {} times a second: its calls beyond that are counted in the kernel, not reported (--max-rate)",
                function.name, plan.max_rate
            );
            sink.record(&Record::Note(&Note { message }))?;
        }
    }
    Ok(())
}

/// How consuming a batch ended.
enum Consumed {
    /// A stop signal fired.
    Stop,
    /// The ring buffer was empty: every event submitted before has been handed on.
    Drained,
    /// A whole batch: more may be waiting.
    More,
}

/// Consumes one batch (at most [`BATCH`] events) a [`CHUNK`] at a time, looking at the stop
/// signals between chunks.
fn consume_until_stop(events: &EventStream<'_>, waiter: &Waiter) -> Result<Consumed> {
    let mut done = 0;
    while done < BATCH {
        let n = events.consume_at_most(CHUNK)?;
        done += n;
        if waiter.stop_requested()? {
            return Ok(Consumed::Stop);
        }
        if n < CHUNK {
            return Ok(Consumed::Drained);
        }
    }
    Ok(Consumed::More)
}

/// For a sink that waits for callers: the calls in flight, looked at once an interval and
/// handed on at the next look if the ring buffer has been seen empty since (so every call that
/// had ended by the first look, its event submitted right after, has reached the sink).
#[derive(Default)]
struct InFlightWatch {
    previous: Option<(Instant, InFlightNow)>,
}

impl InFlightWatch {
    fn look(&mut self, session: &Session, sink: &mut dyn CallSink, drained_at: Instant) {
        if !sink.waits_for_callers() {
            return;
        }
        // A BPF program runs for microseconds between taking a call out of the table and
        // submitting its event.
        const SUBMIT: Duration = Duration::from_millis(5);
        if let Some((taken, previous)) = self.previous.take() {
            if drained_at > taken + SUBMIT {
                sink.in_flight(&previous);
            }
        }
        let taken = Instant::now();
        // A table that could not be read only makes trees wait (for a later look, or the end).
        self.previous = session
            .in_flight_since()
            .ok()
            .flatten()
            .map(|now| (taken, now));
    }
}
