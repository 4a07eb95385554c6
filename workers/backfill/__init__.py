"""`llm-fleet backfill`: embed a corpus through the fleet, resumably, at the provider's rate limit.

Inputs (`inputs`) become items, items become provider-sized jobs (`batching`), jobs
leave at the pace the credential allows (`pacing`) on `llm.batch`, answers are
written as they arrive (`sinks`) and each write is recorded in a journal
(`journal`) so a rerun of the same command continues where the last one stopped,
with every id exactly once in the output. `runner` ties them together.
"""
