-- A session opened by completing a flow names that flow, at most once: completing it again
-- after a crash (the flow outlived the answer that never reached the browser) replaces that
-- session's token instead of opening a second session (engine/src/sessions.rs).
ALTER TABLE sessions ADD COLUMN flow_id TEXT;
CREATE UNIQUE INDEX sessions_by_flow ON sessions(flow_id);
