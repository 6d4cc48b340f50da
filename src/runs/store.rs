//! The SQL the `runs` capability, its WebSocket edge and the runner run,
//! from `sql/runs/`, `sql/ws/` and `sql/runner/`.

crate::db::statements! {
"runs":
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
    INPUT_STATUS => "input_status";
"runner":
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
    BATCH_APPLIED => "batch_applied";
"ws":
    CONSUME_TOKEN => "consume_token",
    READ_EVENTS => "read_events",
    READ_NEW_EVENTS => "read_new_events",
    MAX_SEQ => "max_seq",
}
