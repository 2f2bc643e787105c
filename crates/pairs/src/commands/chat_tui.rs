//! The terminal UI of `pairs chat` (ratatui): rooms with unread counts, the scrollback of the room
//! chosen, who is here, and a line to write in.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use pairs::base::NodeId;
use pairs::chat::{BookEntry, ChatOp, Line, Position, Room, RoomBook};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize as _};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, List, ListItem, ListState, Paragraph};
use tokio::sync::mpsc;

use super::chat::{ChatNode, Followed, display_name, format_message, has_history, mark_read};
use super::stop_requested;
use crate::cli::DiscoveryArgs;

const HELP: &str = "Enter send · Tab/Shift-Tab room · PgUp/PgDn scroll · /reply /react /file /name /help · Esc quit";

/// One room on screen.
struct Shown {
    name: String,
    entry: BookEntry,
    room: Room,
    /// How far it was read (saved to the room book).
    read: Option<Position>,
    here: Vec<NodeId>,
    loaded: bool,
}

struct App {
    rooms: Vec<Shown>,
    selected: usize,
    input: String,
    /// Lines scrolled up from the newest.
    scroll: usize,
    status: String,
    quit: bool,
}

/// `pairs chat [ROOM]` on a terminal.
pub(crate) async fn run(
    data_dir: Option<&Path>,
    isolated: bool,
    discovery: &DiscoveryArgs,
    room: Option<String>,
) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let book = RoomBook::load(&home)?;
    if book.rooms.is_empty() {
        anyhow::bail!("no rooms here yet: pairs chat new TITLE, or pairs chat join TICKET");
    }
    let selected = match &room {
        Some(room) => {
            let (name, _) = super::chat::find(&home, room)?;
            book.rooms.keys().position(|n| *n == name).unwrap_or(0)
        }
        None => 0,
    };
    let mut node = ChatNode::start(data_dir, isolated, discovery).await?;
    let result = drive(&mut node, book, selected).await;
    node.shutdown().await;
    result
}

async fn drive(node: &mut ChatNode, book: RoomBook, selected: usize) -> Result<()> {
    let (tx, mut followed) = mpsc::channel::<Followed>(64);
    let mut rooms = Vec::new();
    for (index, (name, entry)) in book.rooms.into_iter().enumerate() {
        node.open(&entry).await?;
        node.follow(entry.log, index, tx.clone()).await?;
        rooms.push(Shown {
            room: node.room(entry.log),
            read: entry.read,
            name,
            entry,
            here: Vec::new(),
            loaded: false,
        });
    }
    let mut app = App {
        rooms,
        selected,
        input: String::new(),
        scroll: 0,
        status: if node.through_running_node() {
            "through the running node".into()
        } else {
            "this window is the node: rooms sync while it is open".into()
        },
        quit: false,
    };
    let keys = key_reader();
    let mut terminal = ratatui::init();
    let result = async {
        let mut keys = keys;
        let mut stop = stop_requested();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            app.mark_read();
            terminal.draw(|frame| app.draw(frame, node.me))?;
            tokio::select! {
                Some((index, event)) = followed.recv() => match event {
                    Ok(pairs::control::Followed::CaughtUp) => {}
                    Ok(pairs::control::Followed::End) => {}
                    Ok(pairs::control::Followed::Entries(entries)) => {
                        let shown = &mut app.rooms[index];
                        shown.room.apply(&entries);
                        shown.room.take_new();
                        if !shown.loaded && has_history(&shown.room) {
                            shown.loaded = true;
                            let log = shown.entry.log;
                            if let Err(err) = node.introduce(log, &app.rooms[index].room).await {
                                app.status = format!("{err:#}");
                            }
                        }
                    }
                    Err(err) => app.status = format!("{}: {err:#}", app.rooms[index].name),
                },
                Some(key) = keys.recv() => {
                    app.key(key, node).await;
                    if app.quit {
                        break;
                    }
                }
                _ = tick.tick() => {
                    let log = app.rooms[app.selected].entry.log;
                    if let Ok(peers) = node.peers(log).await {
                        app.rooms[app.selected].here = peers;
                    }
                }
                _ = &mut stop => break,
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    ratatui::restore();
    for shown in &app.rooms {
        mark_read(node.home(), &shown.name, shown.read)?;
    }
    result
}

/// Keys from a thread of their own (crossterm's reads block).
fn key_reader() -> mpsc::Receiver<KeyEvent> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        loop {
            match event::read() {
                Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                    if tx.blocking_send(key).is_err() {
                        break;
                    }
                }
                Ok(_) => {
                    // A resize or focus change: redraw.
                    let redraw = KeyEvent::new(KeyCode::Null, KeyModifiers::NONE);
                    if tx.blocking_send(redraw).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
    });
    rx
}

impl App {
    fn current(&self) -> &Shown {
        &self.rooms[self.selected]
    }

    /// The room on screen, scrolled to the bottom, counts as read.
    fn mark_read(&mut self) {
        if self.scroll == 0 {
            let shown = &mut self.rooms[self.selected];
            if let Some(last) = shown.room.last_position()
                && Some(last) > shown.read
            {
                shown.read = Some(last);
            }
        }
    }

    async fn key(&mut self, key: KeyEvent, node: &mut ChatNode) {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Esc => self.quit = true,
            KeyCode::Char('c' | 'd') if ctrl => self.quit = true,
            KeyCode::Char('u') if ctrl => self.input.clear(),
            KeyCode::Tab => self.switch(1),
            KeyCode::BackTab => self.switch(self.rooms.len() - 1),
            KeyCode::PageUp => self.scroll += 10,
            KeyCode::PageDown => self.scroll = self.scroll.saturating_sub(10),
            KeyCode::End => self.scroll = 0,
            KeyCode::Backspace => {
                self.input.pop();
            }
            KeyCode::Enter => {
                let line = std::mem::take(&mut self.input);
                if let Err(err) = self.submit(line.trim(), node).await {
                    self.status = format!("{err:#}");
                    self.input = line;
                }
            }
            KeyCode::Char(c) if !ctrl => self.input.push(c),
            _ => {}
        }
    }

    fn switch(&mut self, by: usize) {
        self.selected = (self.selected + by) % self.rooms.len();
        self.scroll = 0;
    }

    async fn submit(&mut self, line: &str, node: &mut ChatNode) -> Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        let log = self.current().entry.log;
        if !self.current().loaded && !line.starts_with('/') {
            anyhow::bail!(
                "the room has not arrived yet: it comes from a member who is online (kept your line)"
            );
        }
        let newest = || {
            self.current()
                .room
                .tail(1)
                .into_iter()
                .find_map(|line| match line {
                    Line::Message(m) => Some(m.id),
                    Line::Flood { .. } => None,
                })
                .context("no message to answer yet")
        };
        let (command, rest) = match line.strip_prefix('/') {
            Some(command) => command.split_once(' ').unwrap_or((command, "")),
            None => ("", line),
        };
        let op = match command {
            "" => ChatOp::Post {
                text: rest.to_owned(),
                reply_to: None,
                attachment: None,
            },
            "reply" => ChatOp::Post {
                text: rest.to_owned(),
                reply_to: Some(newest()?),
                attachment: None,
            },
            "react" => ChatOp::React {
                to: newest()?,
                reaction: if rest.is_empty() { "👍" } else { rest }.to_owned(),
                on: true,
            },
            "name" => {
                let home = node.home().to_path_buf();
                let mut identity = pairs::chat::Identity::load(&home)?;
                identity.name = rest.to_owned();
                identity.profile().encode()?;
                identity.save(&home)?;
                let room = &self.current().room;
                node.introduce(log, room).await?;
                self.status = format!("shown as '{rest}'");
                return Ok(());
            }
            "file" => ChatOp::Post {
                text: String::new(),
                reply_to: None,
                // Through this chat's own connection: with no running node, this process is it.
                attachment: Some(node.attach(Path::new(rest)).await?),
            },
            "quit" => {
                self.quit = true;
                return Ok(());
            }
            _ => {
                self.status = HELP.into();
                return Ok(());
            }
        };
        node.post(log, &self.current().room, &op).await?;
        self.scroll = 0;
        Ok(())
    }

    fn draw(&self, frame: &mut ratatui::Frame, me: NodeId) {
        let [main, input, status] = Layout::vertical([
            Constraint::Min(3),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let [rooms, messages, here] = Layout::horizontal([
            Constraint::Length(24),
            Constraint::Min(20),
            Constraint::Length(22),
        ])
        .areas(main);
        self.draw_rooms(frame, rooms);
        self.draw_messages(frame, messages);
        self.draw_here(frame, here, me);
        let prompt =
            Paragraph::new(format!("> {}", self.input)).block(Block::bordered().title(" Message "));
        frame.render_widget(prompt, input);
        frame.set_cursor_position((input.x + 3 + self.input.chars().count() as u16, input.y + 1));
        frame.render_widget(
            Paragraph::new(format!(" {}  —  {HELP}", self.status)).style(Style::new().dim()),
            status,
        );
    }

    fn draw_rooms(&self, frame: &mut ratatui::Frame, area: Rect) {
        let items: Vec<ListItem> = self
            .rooms
            .iter()
            .map(|shown| {
                let unread = shown.room.unread_after(shown.read);
                let mut spans = vec![Span::raw(shown.name.clone())];
                if unread > 0 {
                    spans.push(Span::styled(
                        format!(" ({unread})"),
                        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                    ));
                }
                ListItem::new(TextLine::from(spans))
            })
            .collect();
        let mut state = ListState::default().with_selected(Some(self.selected));
        let list = List::new(items)
            .block(Block::bordered().title(" Rooms "))
            .highlight_style(Style::new().reversed())
            .highlight_symbol("> ");
        frame.render_stateful_widget(list, area, &mut state);
    }

    fn draw_messages(&self, frame: &mut ratatui::Frame, area: Rect) {
        let shown = self.current();
        let title = shown.room.title().unwrap_or(&shown.name).to_owned();
        let width = area.width.saturating_sub(2).max(1) as usize;
        let height = area.height.saturating_sub(2) as usize;
        // Enough messages for a screen even when each wraps, plus what is scrolled past.
        let wanted = height + self.scroll;
        let mut rows: Vec<TextLine> = Vec::new();
        for line in shown.room.tail(wanted) {
            let (text, style) = match &line {
                Line::Message(m) => (format_message(&shown.room, m), Style::new()),
                Line::Flood {
                    person,
                    name,
                    count,
                    ..
                } => (
                    format!(
                        "… {count} more from {} held back as a flood",
                        display_name(name, person)
                    ),
                    Style::new().dim(),
                ),
            };
            for row in wrap(&text, width) {
                rows.push(TextLine::styled(row, style));
            }
        }
        let end = rows.len().saturating_sub(self.scroll);
        let start = end.saturating_sub(height);
        let mut block_title = format!(" {title} ");
        if self.scroll > 0 {
            block_title.push_str(&format!("(scrolled {} up: End) ", self.scroll));
        }
        if !shown.loaded {
            block_title.push_str("(waiting for a member to reach) ");
        } else if shown.room.is_empty() {
            rows.push(TextLine::styled(
                "no messages yet: write one below",
                Style::new().dim(),
            ));
        }
        let end = end.max(rows.len().min(start + height));
        let paragraph =
            Paragraph::new(rows[start..end].to_vec()).block(Block::bordered().title(block_title));
        frame.render_widget(paragraph, area);
    }

    fn draw_here(&self, frame: &mut ratatui::Frame, area: Rect, me: NodeId) {
        let shown = self.current();
        let mut items = vec![ListItem::new(format!(
            "{} (you)",
            display_name(&shown.room.name_of(&shown.room.person_of(&me)), &me)
        ))];
        for peer in &shown.here {
            let person = shown.room.person_of(peer);
            items.push(ListItem::new(display_name(
                &shown.room.name_of(&person),
                &person,
            )));
        }
        let list = List::new(items)
            .block(Block::bordered().title(format!(" Here ({}) ", shown.here.len() + 1)));
        frame.render_widget(list, area);
    }
}

/// Cuts text into rows of at most `width` characters, at spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut rows = Vec::new();
    let mut row = String::new();
    for word in text.split(' ') {
        let len = row.chars().count();
        let word_len = word.chars().count();
        if len > 0 && len + 1 + word_len > width {
            rows.push(std::mem::take(&mut row));
        }
        if !row.is_empty() {
            row.push(' ');
        }
        row.push_str(word);
        while row.chars().count() > width {
            let cut: String = row.chars().take(width).collect();
            row = row.chars().skip(width).collect();
            rows.push(cut);
        }
    }
    rows.push(row);
    rows
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrapping_keeps_every_character_and_the_width() {
        let text = "a longish message with averyveryverylongword in it";
        let rows = wrap(text, 10);
        assert!(rows.iter().all(|r| r.chars().count() <= 10), "{rows:?}");
        assert_eq!(rows.join(" ").replace(' ', ""), text.replace(' ', ""));
    }
}
