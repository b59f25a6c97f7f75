//! `troupe-node top`: the dashboard's live view in a terminal, for servers without a
//! browser. Nodes with their load, the newest jobs, and the steps of the selected job,
//! refreshed every `--interval` seconds. Keys: ↑/↓ (or k/j) select a job, q or Esc quits.
//!
//! `--once` prints a single frame as plain text and exits (scripts, tests, pipes).

use std::time::Duration;

use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Gauge, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};
use troupe_runtime::observe::JobsPage;
use troupe_runtime::protocol::{NodeInfo, NodeState};
use troupe_runtime::{Client, JobState, JobStatus, StepState};

use crate::cli::TopArgs;
use crate::commands::jobs::plural;
use crate::commands::{connect, fail};
use crate::exit;

/// Jobs listed at most.
const JOBS_SHOWN: usize = 30;

/// One refresh worth of data.
#[derive(Default)]
struct Snapshot {
    nodes: Vec<NodeInfo>,
    jobs: JobsPage,
    in_flight: u64,
    waiting: u64,
    detail: Option<JobStatus>,
    error: Option<String>,
}

async fn gather(client: &Client, selected: usize) -> Snapshot {
    let mut s = Snapshot::default();
    match client.nodes().await {
        Ok(mut n) => {
            n.sort_by(|a, b| a.name.cmp(&b.name));
            s.nodes = n;
        }
        Err(e) => s.error = Some(e.to_string()),
    }
    match client.jobs(None, 0, JOBS_SHOWN).await {
        Ok(j) => s.jobs = j,
        Err(e) => s.error = Some(e.to_string()),
    }
    // One gathering answers the list and the counts by state.
    let count = |st: JobState| s.jobs.by_state.get(st.as_str()).copied().unwrap_or(0);
    s.waiting = count(JobState::WaitingForUser);
    s.in_flight = count(JobState::Queued) + count(JobState::Running) + s.waiting;
    if let Some(j) = s
        .jobs
        .jobs
        .get(selected.min(s.jobs.jobs.len().saturating_sub(1)))
    {
        s.detail = client.status(&j.id).await.ok();
    }
    s
}

fn state_color(state: &str) -> Color {
    match state {
        "up" | "succeeded" => Color::Green,
        "running" | "suspect" => Color::Yellow,
        "down" | "failed" => Color::Red,
        "waiting_for_user" => Color::Magenta,
        "cancelled" => Color::LightRed,
        _ => Color::Gray,
    }
}

fn draw(f: &mut Frame, s: &Snapshot, selected: usize) {
    let detail_rows = s.detail.as_ref().map(|d| d.steps.len()).unwrap_or(0);
    let [head, nodes, jobs, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(s.nodes.len() as u16 + 3),
        Constraint::Min(6),
        Constraint::Length((detail_rows as u16 + 3).clamp(4, 20)),
    ])
    .areas(f.area());

    let up = s.nodes.iter().filter(|n| n.state == NodeState::Up).count();
    let busy: u32 = s.nodes.iter().map(|n| n.busy).sum();
    let slots: u32 = s.nodes.iter().map(|n| n.slots).sum();
    let mut header = vec![
        Span::styled("troupe top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            " {up} {} up · {busy}/{slots} slots busy · {} {} in flight · {} waiting for a user",
            plural(up as u64, "node"),
            s.in_flight,
            plural(s.in_flight, "job"),
            s.waiting
        )),
    ];
    if let Some(e) = &s.error {
        header.push(Span::styled(format!("  {e}"), Style::new().fg(Color::Red)));
    }
    f.render_widget(Paragraph::new(Line::from(header)), head);

    let node_rows = s.nodes.iter().map(|n| {
        let st = n.state.as_str();
        Row::new(vec![
            Cell::from(n.name.clone()),
            Cell::from(st).style(Style::new().fg(state_color(st))),
            Cell::from(n.address.clone()),
            Cell::from(format!("{}/{}", n.busy, n.slots)),
            Cell::from(n.queued.to_string()),
            Cell::from(n.tasks.join(" ")),
        ])
    });
    f.render_widget(
        Table::new(
            node_rows,
            [
                Constraint::Length(12),
                Constraint::Length(8),
                Constraint::Length(22),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(["NODE", "STATE", "ADDRESS", "BUSY", "QUEUED", "TASKS"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title(" nodes ")),
        nodes,
    );

    let job_rows = s.jobs.jobs.iter().enumerate().map(|(i, j)| {
        let st = j.state.as_str();
        let mut row = Row::new(vec![
            Cell::from(j.id.clone()),
            Cell::from(j.name.clone()),
            Cell::from(st).style(Style::new().fg(state_color(st))),
            Cell::from(format!("{}/{}", j.finished_steps, j.steps)),
            Cell::from(j.running_steps.to_string()),
            Cell::from(j.elapsed_ms.map(|m| format!("{m} ms")).unwrap_or_default()),
            Cell::from(j.error.clone().unwrap_or_default()),
        ]);
        if i == selected {
            row = row.style(Style::new().add_modifier(Modifier::REVERSED));
        }
        row
    });
    let title = format!(
        " jobs: {} newest of {}{} ",
        s.jobs.jobs.len(),
        s.jobs.total,
        if s.jobs.unanswered.is_empty() {
            String::new()
        } else {
            format!(" (no answer from {})", s.jobs.unanswered.join(", "))
        }
    );
    f.render_widget(
        Table::new(
            job_rows,
            [
                Constraint::Length(24),
                Constraint::Length(16),
                Constraint::Length(17),
                Constraint::Length(7),
                Constraint::Length(7),
                Constraint::Length(10),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new([
                "JOB", "NAME", "STATE", "STEPS", "RUNNING", "ELAPSED", "ERROR",
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::new().borders(Borders::TOP).title(title)),
        jobs,
    );

    let Some(d) = &s.detail else {
        f.render_widget(
            Paragraph::new("no job selected").block(Block::new().borders(Borders::TOP)),
            detail,
        );
        return;
    };
    let done = d.steps.values().filter(|s| s.state.is_terminal()).count();
    let [gauge, steps] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(detail);
    f.render_widget(
        Gauge::default()
            .block(Block::new().borders(Borders::TOP).title(format!(
                " job {} ({}) ",
                d.id,
                d.state.as_str()
            )))
            .gauge_style(Style::new().fg(state_color(d.state.as_str())))
            .ratio(if d.steps.is_empty() {
                0.0
            } else {
                done as f64 / d.steps.len() as f64
            })
            .label(format!("{done}/{} steps", d.steps.len())),
        gauge,
    );
    let step_rows = d.steps.iter().map(|(id, st)| {
        let w = st.state.as_str();
        let note = match st.state {
            StepState::WaitingForUser => format!(
                "{} (troupe-node resume {} {id})",
                st.message.clone().unwrap_or_default(),
                d.id
            ),
            _ => st.error.clone().unwrap_or_default(),
        };
        Row::new(vec![
            Cell::from(id.clone()),
            Cell::from(st.task.clone()),
            Cell::from(w).style(Style::new().fg(state_color(w))),
            Cell::from(st.node.clone().unwrap_or_else(|| "-".into())),
            Cell::from(st.attempts.to_string()),
            Cell::from(st.after.join(",")),
            Cell::from(note),
        ])
    });
    f.render_widget(
        Table::new(
            step_rows,
            [
                Constraint::Length(16),
                Constraint::Length(20),
                Constraint::Length(17),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(14),
                Constraint::Min(10),
            ],
        )
        .header(
            Row::new(["STEP", "TASK", "STATE", "NODE", "ATTEMPTS", "AFTER", "NOTE"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        ),
        steps,
    );
}

/// Renders one frame into text lines (no colours), trailing blank lines dropped.
fn frame_text(s: &Snapshot, width: u16) -> String {
    let detail = s.detail.as_ref().map(|d| d.steps.len()).unwrap_or(0);
    let height =
        (1 + s.nodes.len() + 3 + (s.jobs.jobs.len() + 3).max(6) + (detail + 3).clamp(4, 20)) as u16;
    let Ok(mut t) = Terminal::new(TestBackend::new(width, height)) else {
        return String::new();
    };
    let _ = t.draw(|f| draw(f, s, 0));
    let buf = t.backend().buffer();
    let mut lines: Vec<String> = buf
        .content
        .chunks(width as usize)
        .map(|row| {
            row.iter()
                .map(|c| c.symbol())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.join("\n")
}

/// Runs `top`.
pub async fn run(a: TopArgs) -> u8 {
    if !(a.interval.is_finite() && (0.1..=86_400.0).contains(&a.interval)) {
        eprintln!("troupe-node: --interval must be between 0.1 and 86400 seconds");
        return exit::BAD_INPUT;
    }
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if a.once {
        // Give the client a moment to learn the cluster's groups.
        let _ = client.wait_for_nodes(1, Duration::from_secs(5)).await;
        let s = gather(&client, 0).await;
        println!("{}", frame_text(&s, a.width.max(60)));
        return exit::OK;
    }
    interactive(&client, Duration::from_secs_f64(a.interval)).await
}

enum Key {
    Quit,
    Up,
    Down,
}

async fn interactive(client: &Client, every: Duration) -> u8 {
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Key reading blocks, so it has its own thread; it ends with the process.
    std::thread::spawn(move || loop {
        match event::read() {
            Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => {
                let key = match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => Key::Quit,
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Quit,
                    KeyCode::Up | KeyCode::Char('k') => Key::Up,
                    KeyCode::Down | KeyCode::Char('j') => Key::Down,
                    _ => continue,
                };
                if tx.send(key).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    });
    let mut terminal = ratatui::init();
    let mut selected = 0usize;
    let mut snap = gather(client, selected).await;
    let code = loop {
        if let Err(e) = terminal.draw(|f| draw(f, &snap, selected)) {
            ratatui::restore();
            eprintln!("troupe-node: cannot draw on this terminal: {e}");
            return exit::BAD_INPUT;
        }
        tokio::select! {
            k = rx.recv() => match k {
                Some(Key::Quit) | None => break exit::OK,
                Some(Key::Up) => selected = selected.saturating_sub(1),
                Some(Key::Down) => selected = (selected + 1).min(snap.jobs.jobs.len().saturating_sub(1)),
            },
            _ = tokio::time::sleep(every) => {}
        }
        snap = gather(client, selected).await;
    };
    ratatui::restore();
    code
}
