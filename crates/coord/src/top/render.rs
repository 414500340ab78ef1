//! Drawing `coord top`: a pure function of the [`Model`] and `now`.
//!
//! Every state has a colour **and** a glyph, so a monochrome terminal
//! (`NO_COLOR`, or `--no-color`) tells them apart too. It must not read the
//! clock or the terminal: the caller passes both in.

use super::model::{Link, Model, Pane};
use coord_proto::{LifeState, Timestamp};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, Tabs, Wrap};
use ratatui::Frame;

/// Colours on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// Use colours (glyphs are always drawn).
    pub color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }
}

/// The glyph and colour of a lifecycle state.
pub fn state_mark(s: LifeState) -> (&'static str, Color) {
    match s {
        LifeState::Starting => ("+", Color::Blue),
        LifeState::Active => ("●", Color::Green),
        LifeState::Idle => ("○", Color::Gray),
        LifeState::NeedsInput => ("!", Color::Yellow),
        LifeState::Stale => ("?", Color::Magenta),
        LifeState::Dead => ("✗", Color::Red),
    }
}

/// `3s`, `4m`, `2h`, `5d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn since(now: Timestamp, at: Timestamp) -> String {
    age((now.as_millis() - at.as_millis()).max(0) as u64)
}

/// One event as the tail shows it: seq, UTC time of day, kind, and the
/// sentence `coord events` prints.
pub fn event_line(e: &coord_proto::Event) -> String {
    let ts = e.ts.to_string();
    let clock = ts.get(11..19).unwrap_or(&ts);
    format!(
        "{:>6} {clock} {:<18} {}",
        e.seq,
        e.kind(),
        coord_proto::render_event(e)
    )
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame, m: &Model, now: Timestamp, theme: Theme) {
    let area = f.area();
    let [title, tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(f, title, m, now, theme);
    let titles: Vec<Line> = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| Line::from(format!("{} {}", i + 1, p.title())))
        .collect();
    let selected = Pane::ALL.iter().position(|p| *p == m.pane).unwrap_or(0);
    f.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED)),
        tabs,
    );
    match (&m.detail, m.pane) {
        (Some(sid), _) => draw_detail(f, body, m, sid, now, theme),
        (None, Pane::Sessions) => draw_sessions(f, body, m, now, theme),
        (None, Pane::Locks) => draw_locks(f, body, m, now),
        (None, Pane::Work) => draw_work(f, body, m, now),
        (None, Pane::Events) => draw_events(f, body, m),
        (None, Pane::Approvals) => super::approvals::draw(f, body, m, now),
    }
    let hint = match &m.editing {
        Some(t) => format!("filter (kind glob, session or resource): {t}_   Enter apply · Esc cancel"),
        None => "q quit · ? keys · Tab/1-5 panes · ↑↓ select · Enter detail · t tree · / filter · p pause"
            .to_string(),
    };
    f.render_widget(Paragraph::new(hint), footer);
    if m.help {
        draw_help(f, area);
    }
}

fn draw_title(f: &mut Frame, area: Rect, m: &Model, now: Timestamp, theme: Theme) {
    let v = &m.state.view;
    let mut spans = vec![Span::styled(
        "coord top",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    // The banner comes first so a narrow terminal still shows it.
    if let Link::Lost { since_ms, why } = &m.link {
        spans.push(Span::styled(
            format!(
                "  DISCONNECTED {} ago, reconnecting ({why})",
                age((now.as_millis() - since_ms).max(0) as u64)
            ),
            theme
                .fg(Color::Red)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    spans.push(Span::raw(format!(
        "  {}  seq {}  sessions {}  locks {}  orders {}",
        m.origin,
        m.state.head,
        v.sessions.len(),
        v.locks.len(),
        v.orders.len()
    )));
    if !v.approvals.is_empty() {
        spans.push(Span::styled(
            format!("  approvals {} (5)", v.approvals.len()),
            theme.fg(Color::Magenta).add_modifier(Modifier::BOLD),
        ));
    }
    if m.link == Link::Connecting {
        spans.push(Span::styled(
            "  connecting…",
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if m.paused {
        spans.push(Span::styled("  [paused]", theme.fg(Color::Yellow)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_sessions(f: &mut Frame, area: Rect, m: &Model, now: Timestamp, theme: Theme) {
    let header = Row::new([
        "", "SESSION", "ROLE", "TASK", "PHASE", "STATE", "FOR", "HB", "LOCKS", "MAIL",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let mut rows: Vec<Row> = Vec::new();
    for (i, (depth, s)) in m.sessions().into_iter().enumerate() {
        let (glyph, color) = state_mark(s.state);
        let name = format!("{}{}", "  ".repeat(depth), s.session_id);
        let mut row = Row::new(vec![
            Cell::from(glyph).style(theme.fg(color)),
            Cell::from(name),
            Cell::from(s.role.clone()),
            Cell::from(s.task.clone()),
            // A session waiting for a human shows what for, where its
            // phase would be.
            match s.waits_for() {
                Some(what) => Cell::from(coord_proto::ids::terminal_safe(what, false).into_owned())
                    .style(theme.fg(color)),
                None => Cell::from(s.phase.clone()),
            },
            Cell::from(s.state.as_str()).style(theme.fg(color)),
            Cell::from(
                m.in_state_ms(&s.session_id, now)
                    .map(age)
                    .unwrap_or_default(),
            ),
            Cell::from(since(now, m.renewed_at(s))),
            Cell::from(m.held(&s.session_id).len().to_string()),
            Cell::from(m.unread(&s.session_id).to_string()),
        ]);
        if s.state == LifeState::NeedsInput {
            row = row.style(Style::default().add_modifier(Modifier::BOLD));
        }
        if i == m.selected {
            row = row.style(Style::default().add_modifier(Modifier::REVERSED));
        }
        rows.push(row);
    }
    let (glyph, color) = state_mark(LifeState::Dead);
    for e in m.ended() {
        rows.push(Row::new(vec![
            Cell::from(glyph).style(theme.fg(color)),
            Cell::from(e.session_id.clone()),
            Cell::from(e.role.clone()),
            Cell::from(e.task.clone()),
            Cell::from(""),
            Cell::from("dead").style(theme.fg(color)),
            Cell::from(since(now, e.ended_at)),
            Cell::from(""),
            Cell::from(""),
            Cell::from(""),
        ]));
    }
    let widths = [
        Constraint::Length(1),
        Constraint::Min(10),
        Constraint::Length(9),
        Constraint::Length(10),
        // Wide enough, where the terminal is, for what a session waits for.
        Constraint::Fill(1),
        Constraint::Length(11),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(4),
    ];
    let title = if m.tree {
        "Sessions (tree)"
    } else {
        "Sessions"
    };
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn draw_locks(f: &mut Frame, area: Rect, m: &Model, now: Timestamp) {
    let header = Row::new(["RESOURCE", "MODE", "HOLDERS (TOKEN)", "WAITERS (WAITED)"])
        .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = m
        .state
        .view
        .locks
        .values()
        .map(|l| {
            let holders = l
                .holders
                .iter()
                .map(|h| match &h.delegated_from {
                    Some(p) => format!("{} ({}) ← {p}", h.session_id, h.acquired_seq),
                    None => format!("{} ({})", h.session_id, h.acquired_seq),
                })
                .collect::<Vec<_>>()
                .join(", ");
            let waiters = l
                .waiters
                .iter()
                .map(|w| format!("{} ({})", w.session_id, since(now, w.since_at)))
                .collect::<Vec<_>>()
                .join(", ");
            Row::new(vec![
                l.resource.clone(),
                l.mode.as_str().to_string(),
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders
                },
                if waiters.is_empty() {
                    "-".into()
                } else {
                    waiters
                },
            ])
        })
        .collect();
    let widths = [
        Constraint::Percentage(35),
        Constraint::Length(9),
        Constraint::Percentage(30),
        Constraint::Percentage(35),
    ];
    f.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::default().borders(Borders::TOP).title("Locks")),
        area,
    );
}

fn draw_work(f: &mut Frame, area: Rect, m: &Model, now: Timestamp) {
    let [orders, inboxes] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let rows: Vec<Row> = m
        .state
        .view
        .orders
        .values()
        .map(|o| {
            Row::new(vec![
                o.order_id.clone(),
                o.assignee.clone(),
                o.ticket.clone(),
                o.state.as_str().to_string(),
                since(now, o.issued_at),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(26),
                Constraint::Min(10),
                Constraint::Min(10),
                Constraint::Length(9),
                Constraint::Length(5),
            ],
        )
        .header(
            Row::new(["ORDER", "ASSIGNEE", "TICKET", "STATE", "AGE"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title("Dispatch orders"),
        ),
        orders,
    );
    let rows: Vec<Row> = m
        .state
        .view
        .inboxes
        .iter()
        .filter(|(_, msgs)| !msgs.is_empty())
        .map(|(sid, msgs)| {
            let oldest = msgs
                .first()
                .map(|x| since(now, x.sent_at))
                .unwrap_or_default();
            Row::new(vec![sid.clone(), msgs.len().to_string(), oldest])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Min(20),
                Constraint::Length(8),
                Constraint::Length(14),
            ],
        )
        .header(
            Row::new(["INBOX", "UNACKED", "OLDEST UNACKED"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(Block::default().borders(Borders::TOP).title("Inboxes")),
        inboxes,
    );
}

fn draw_events(f: &mut Frame, area: Rect, m: &Model) {
    let tail = m.visible_tail();
    let fit = area.height.saturating_sub(1) as usize;
    let lines: Vec<Line> = tail
        .iter()
        .skip(tail.len().saturating_sub(fit))
        .map(|e| Line::from(event_line(e)))
        .collect();
    let title = match &m.filter {
        Some(fl) => format!("Events (filter: {fl})"),
        None => "Events".to_string(),
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::TOP).title(title)),
        area,
    );
}

fn draw_detail(f: &mut Frame, area: Rect, m: &Model, sid: &str, now: Timestamp, theme: Theme) {
    let mut lines: Vec<Line> = Vec::new();
    match m.state.view.sessions.get(sid) {
        Some(s) => {
            let (glyph, color) = state_mark(s.state);
            lines.push(Line::from(vec![
                Span::styled(format!("{glyph} {}", s.state.as_str()), theme.fg(color)),
                Span::raw(format!(
                    "  for {}  role {}  task {}  phase {}",
                    m.in_state_ms(sid, now).map(age).unwrap_or_default(),
                    s.role,
                    s.task,
                    s.phase
                )),
            ]));
            if !s.state_reason.is_empty() {
                lines.push(Line::from(format!(
                    "why: {}",
                    coord_proto::ids::terminal_safe(&s.state_reason, false)
                )));
            }
            lines.push(Line::from(format!(
                "registered seq {} ({} ago)  pid {}  parent {}  lease {} ms",
                s.registered_seq,
                since(now, s.registered_at),
                s.pid.map_or("-".into(), |p| p.to_string()),
                s.parent_session.as_deref().unwrap_or("-"),
                s.ttl_ms
            )));
            let children: Vec<&String> = s.children.keys().collect();
            lines.push(Line::from(format!(
                "children: {}",
                if children.is_empty() {
                    "-".to_string()
                } else {
                    children
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
        None => lines.push(Line::from(format!("{sid} is not live"))),
    }
    let held = m.held(sid);
    lines.push(Line::from(format!(
        "locks: {}",
        if held.is_empty() {
            "-".to_string()
        } else {
            held.join(", ")
        }
    )));
    let mail = m
        .state
        .view
        .inboxes
        .get(sid)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    lines.push(Line::from(format!("mail: {} unacked", mail.len())));
    for msg in mail.iter().take(5) {
        lines.push(Line::from(format!(
            "  {} from {} ({}, {} bytes, {} ago)",
            msg.msg_id,
            msg.from_session.as_deref().unwrap_or("-"),
            msg.kind,
            msg.size,
            since(now, msg.sent_at)
        )));
    }
    lines.push(Line::from("events:"));
    let own = m.session_events(sid);
    let room = (area.height as usize).saturating_sub(lines.len() + 2);
    for e in own.iter().skip(own.len().saturating_sub(room)) {
        lines.push(Line::from(format!("  {}", event_line(e))));
    }
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::TOP)
                .title(format!("Session {sid}  (Esc back)")),
        ),
        area,
    );
}

fn draw_help(f: &mut Frame, area: Rect) {
    let text = [
        "q        quit",
        "?        this help (any key closes it)",
        "Tab 1-5  sessions, locks, orders, events, approvals",
        "a d x    approvals: allow, deny (type why), ask terminal",
        "↑ ↓ j k  select a session",
        "Enter    the selected session's detail (Esc back)",
        "t        sessions as a tree (children under parents)",
        "/        filter events by kind glob, session or resource",
        "Esc      clear the filter",
        "p        pause / resume the events tail",
        "b        bell on / off when a session needs input",
    ];
    let w = 58.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(text.iter().map(|l| Line::from(*l)).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title("Keys")),
        r,
    );
}
