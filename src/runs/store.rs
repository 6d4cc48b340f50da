//! The SQL the `runs` capability and the runner run, from `sql/runs/` and `sql/runner/`.

macro_rules! statements {
    ($dir:literal: $($name:ident => $file:literal),* $(,)?) => {
        $(pub const $name: &str = include_str!(concat!("../../sql/", $dir, "/", $file, ".sql"));)*
    };
}

statements! { "runs":
    INSERT_CONVERSATION => "insert_conversation",
    LIST_CONVERSATIONS => "list_conversations",
    GET_CONVERSATION => "get_conversation",
    INSERT_RUN => "insert_run",
    GET_RUN => "get_run",
    LIST_EVENTS => "list_events",
    APPEND_EVENTS => "append_events",
    APPEND_RUN_EVENTS => "append_run_events",
    LOCK_RUN => "lock_run",
    CANCEL_QUEUED => "cancel_queued",
    PENDING_CANCEL => "pending_cancel",
    INSERT_COMMAND => "insert_command",
    NOTIFY => "notify",
    ANSWER_INPUT => "answer_input",
    INPUT_STATUS => "input_status",
}

statements! { "runner":
    CLAIM_RUNS => "claim_runs",
    HEARTBEAT => "heartbeat",
    FINISH_RUN => "finish_run",
    REQUEUE_RUN => "requeue_run",
    REQUEST_INPUT => "request_input",
    SET_STATUS => "set_status",
    COMMAND_BY_ID => "command_by_id",
    APPLY_COMMAND => "apply_command",
    PENDING_COMMANDS => "pending_commands",
    ADVANCE_CLOCK => "advance_clock",
    RECOVER_RUNS => "recover_runs",
    APPLY_CANCELS => "apply_cancels",
    EXPIRE_INPUTS => "expire_inputs",
    BEGIN_RUNNER => "begin",
    TOKEN_GRANT => "token_grant",
    QUEUE_WAIT => "queue_wait",
    BATCH_APPLIED => "batch_applied",
}

/// Every statement, so one test can `prepare` them all against a migrated database.
pub const STATEMENTS: &[(&str, &str)] = &[
    ("runs/insert_conversation", INSERT_CONVERSATION),
    ("runs/list_conversations", LIST_CONVERSATIONS),
    ("runs/get_conversation", GET_CONVERSATION),
    ("runs/insert_run", INSERT_RUN),
    ("runs/get_run", GET_RUN),
    ("runs/list_events", LIST_EVENTS),
    ("runs/append_events", APPEND_EVENTS),
    ("runs/append_run_events", APPEND_RUN_EVENTS),
    ("runs/lock_run", LOCK_RUN),
    ("runs/cancel_queued", CANCEL_QUEUED),
    ("runs/pending_cancel", PENDING_CANCEL),
    ("runs/insert_command", INSERT_COMMAND),
    ("runs/notify", NOTIFY),
    ("runs/answer_input", ANSWER_INPUT),
    ("runs/input_status", INPUT_STATUS),
    ("runner/claim_runs", CLAIM_RUNS),
    ("runner/token_grant", TOKEN_GRANT),
    ("runner/heartbeat", HEARTBEAT),
    ("runner/finish_run", FINISH_RUN),
    ("runner/requeue_run", REQUEUE_RUN),
    ("runner/request_input", REQUEST_INPUT),
    ("runner/set_status", SET_STATUS),
    ("runner/command_by_id", COMMAND_BY_ID),
    ("runner/apply_command", APPLY_COMMAND),
    ("runner/pending_commands", PENDING_COMMANDS),
    ("runner/advance_clock", ADVANCE_CLOCK),
    ("runner/recover_runs", RECOVER_RUNS),
    ("runner/apply_cancels", APPLY_CANCELS),
    ("runner/queue_wait", QUEUE_WAIT),
    ("runner/batch_applied", BATCH_APPLIED),
    ("runner/expire_inputs", EXPIRE_INPUTS),
    ("runner/begin", BEGIN_RUNNER),
];
