"""``fieldsync migrate``: move a deployment's embedded store into CouchDB (issue 11, point 9).

One step per domain, in order (:data:`sync.migrate.steps.STEPS`)::

    data keys     wrapped per-place keys (they stay sealed under the master key)
    documents     revision trees, sealed bodies, attachments, per-place logs, _local checkpoints
    accounts      users, places, sessions
    patient IDs   every ID handed out or retired, device blocks, the counters
    SMS           incoming and outgoing messages, the workers' languages
    audit         the embedded chain, copied as a chain of its own
    devices       through the devices port's export/import when it is installed; until
                  then nothing, said in the output and the summary

Every write names its CouchDB id and is skipped when that id is already there and
equal, so a run that was stopped half-way is finished by running it again.  The
run ends by checking, per domain, that every item it copied is in CouchDB, and
by opening a random sample of document bodies on both sides.
"""
