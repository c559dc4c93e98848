import { ACTIVATION_DELAY_MS, CLAIM_AFTER_MS } from '../../src/ingest/sources/membership.js';

// How long after raw pub/sub ingest counted a joining node the cluster has
// switched to it, from the constants that decide it (membership.ts), so no
// test or benchmark keeps a copy that goes stale when they change.

/** A joining node handles its share from ACTIVATION_DELAY_MS after it joined; half a second of margin. */
export const INGEST_ACTIVE_MS = ACTIVATION_DELAY_MS + 500;

/**
 * Until then the old and the new owner both claim messages around the switch,
 * whichever is first, so one stream's order can mix; past it each node handles
 * exactly what it owns. The join was at most a heartbeat before it was counted.
 */
export const INGEST_SETTLED_MS = ACTIVATION_DELAY_MS + CLAIM_AFTER_MS + 1500;
