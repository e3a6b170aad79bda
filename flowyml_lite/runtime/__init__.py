"""The scheduler's runtime, one room per job: loop (when) → claims (whether, once) → runner (how)
→ outcomes (what happened) → housekeeping (who is alive). ``PipelineScheduler`` wires them."""
