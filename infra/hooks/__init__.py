"""Alerting hooks: receivers, durable signed deliveries, noise control, acknowledge links.

- ``matching``: pure decisions (which receivers, silenced, inhibited, retry times);
- ``receivers``: the ``GARDA_RECEIVERS`` file; ``policy``: the policy's ``[hooks]`` table;
- ``enqueue``: delivery rows written in the transaction that raised the alerts;
- ``signing``: Standard Webhooks signatures and the CloudEvent / Alertmanager bodies;
- ``dispatcher``: claims due deliveries (``FOR UPDATE SKIP LOCKED``), POSTs, records, retries;
- ``silences``, ``acklinks``, ``ledger``: what the CLI and the API use;
- ``stats``: per-process delivery counters and latencies (for ``/metrics``).
"""
