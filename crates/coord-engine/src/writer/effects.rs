//! What follows a commit, per kind of event, in one place: the counters,
//! message-body attachments, lease and lock timers, waits answered, pid
//! watches started or stopped.
//!
//! It must not append anything: effects that need a write queue one.

use super::*;

impl<L: EventLog + Clone> Writer<L> {
    /// Counts one committed batch: its events, its writes and their
    /// refusals, its time, and the bridge's and probes' shares.
    pub(super) fn count(
        &mut self,
        events: &[Arc<Published>],
        answers: &[(Write, Result<Committed, WriteError>)],
        commit_us: u64,
    ) {
        let m = &self.config.metrics;
        m.batch_size.observe(answers.len() as f64);
        m.counts.events(events.iter().map(|p| &p.event));
        m.counts
            .commit(answers.len(), commit_us, std::time::Instant::now());
        for p in events {
            if let Payload::SessionProbeError(p) = &p.event.payload {
                m.probe_errors
                    .get_or_create(&ProbeLabel {
                        probe: p.probe.clone(),
                    })
                    .inc();
            }
        }
        for (w, a) in answers {
            if w.source.starts_with("fs-") {
                m.bridge_changes.inc();
            }
            if let Err(e) = a {
                m.counts.refused(e.code(), 1);
            }
        }
    }

    /// Blobs that commit with an event: token hashes and message bodies.
    pub(super) fn attachments_for(
        &self,
        payload: &Payload,
        session_id: Option<&str>,
        w: &Write,
        body: Option<&String>,
        batch: &mut Batch,
    ) {
        match payload {
            Payload::SessionRegister(_) => {
                if let (Some(sid), Some(hash)) = (session_id, &w.extras.token_hash) {
                    batch.attachments.push(AttachmentOp::Put {
                        key: format!("token/{sid}"),
                        value: hash.as_bytes().to_vec(),
                    });
                }
            }
            Payload::SessionDereg(_) => {
                if let Some(sid) = session_id {
                    batch.attachments.push(AttachmentOp::Delete {
                        key: format!("token/{sid}"),
                    });
                    for m in self.state.view.inboxes.get(sid).into_iter().flatten() {
                        batch.attachments.push(AttachmentOp::Delete {
                            key: body_key(sid, &m.msg_id),
                        });
                    }
                }
            }
            Payload::InboxDeliver(p) => batch.attachments.push(AttachmentOp::Put {
                key: body_key(&p.to_session, &p.msg_id),
                value: body
                    .or(w.extras.body.as_ref())
                    .cloned()
                    .unwrap_or_default()
                    .into_bytes(),
            }),
            Payload::InboxAck(p) => batch.attachments.push(AttachmentOp::Delete {
                key: body_key(&p.to_session, &p.msg_id),
            }),
            // The tool's full input, fetched by id; kept while the
            // approval is pending or among the last decided.
            Payload::ApprovalRequest(p) => batch.attachments.push(AttachmentOp::Put {
                key: approval_key(&p.approval_id),
                value: w.extras.body.clone().unwrap_or_default().into_bytes(),
            }),
            // The decided approval that this decision pushes out of the
            // kept ones takes its input with it.
            Payload::ApprovalDecide(_)
                if self.state.decided.len() >= coord_proto::approval::DECIDED_APPROVALS_KEPT =>
            {
                if let Some(oldest) = self.state.decided.front() {
                    batch.attachments.push(AttachmentOp::Delete {
                        key: approval_key(&oldest.approval_id),
                    });
                }
            }
            _ => {}
        }
    }

    /// Timers, watches and notifications that follow a committed event.
    pub(super) fn after_commit(&mut self, e: &Event) {
        self.timers.on_event(e);
        self.waits.on_event(e);
        if let Payload::SessionDereg(d) = &e.payload {
            let sid = e.session_id.as_deref().unwrap_or_default();
            self.tokens.remove(sid);
            self.pids.end(
                sid,
                d.signal.as_ref().map(|_| d.kill_after_ms.unwrap_or(0)),
                d.group_kill_after_ms,
            );
        }
    }

    /// Effects that need the request itself: lease renewal, pid watches,
    /// token caching, queued-wait registration.
    pub(super) fn after_answer(&mut self, w: &mut Write, c: &Committed) {
        match &w.cmd {
            Command::Register { session_id, .. } => {
                if let Some(seq) = c.first_seq {
                    if let Some(hash) = w.extras.token_hash.take() {
                        self.tokens.put(session_id, hash);
                    }
                    let watched = self
                        .state
                        .view
                        .sessions
                        .get(session_id)
                        .and_then(|s| s.watched_pid());
                    if let Some(pid) = watched {
                        let fd = w.extras.pidfd.take();
                        self.watch_pid(session_id.clone(), seq, pid, fd);
                    }
                }
            }
            Command::Heartbeat { session_id, .. } => {
                self.config.renewals.note(session_id);
                if let Some(s) = self.state.view.sessions.get(session_id) {
                    // Only the daemon a session registered with keeps its
                    // lease (PROTOCOL §12).
                    if s.daemon == self.config.daemon_id {
                        self.timers.renew(session_id, s.registered_seq, s.ttl_ms);
                    }
                }
            }
            Command::Acquire {
                session_id,
                resource,
                ..
            } => {
                if matches!(c.reply, Reply::Waiting | Reply::AlreadyWaiting) {
                    if let Some(tx) = w.extras.wait.take() {
                        self.waits.register(&self.state, resource, session_id, tx);
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn watch_pid(
        &mut self,
        session_id: String,
        registered_seq: u64,
        pid: u32,
        fd: Option<OwnedFd>,
    ) {
        let handle = self.handle.clone();
        let sid = session_id.clone();
        self.pids.watch(&session_id, pid, fd, move |exit_code| {
            handle.spawn_write(internal(Command::ProcessExited {
                session_id: sid,
                registered_seq,
                exit_code,
            }))
        });
    }

    /// After a restart: leases and lock TTLs are set again, pids are
    /// watched again.
    pub(super) fn restore_timers_and_watches(&mut self) {
        self.timers.restore(&self.state);
        let watched: Vec<(String, u64, u32)> = self
            .state
            .view
            .sessions
            .values()
            .filter(|s| s.daemon == self.config.daemon_id)
            .filter_map(|s| {
                s.watched_pid()
                    .map(|pid| (s.session_id.clone(), s.registered_seq, pid))
            })
            .collect();
        for (sid, seq, pid) in watched {
            self.watch_pid(sid, seq, pid, None);
        }
    }
}
