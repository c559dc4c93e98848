/** Event kinds a receiver can be sent (SPEC "Webhooks"). */
export const WEBHOOK_EVENT_TYPES = [
  'user.online',
  'user.offline',
  'channel.occupied',
  'channel.vacated',
  'member.added',
  'member.removed',
  'message.undelivered',
] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

/** A receiver: a URL, how calls to it are signed, and what body it takes. */
export interface Endpoint {
  /** Short stable id (a hash of the URL): names its queues, so every node agrees on them. */
  readonly id: string;
  readonly url: URL;
  readonly secret: string;
  /** Metric label: the URL's origin, never its path or credentials. */
  readonly label: string;
  /**
   * `PUSHRELAY_OFFLINE_WEBHOOK`: one call per event with the offline body of
   * old (`{"type":"offline",...}`), given up on a 4xx other than 408 and 429.
   */
  readonly legacy: boolean;
}

/**
 * An event as a queue holds it: the JSON the receiver gets, and when it may
 * be sent. `hold` > 0 is a debounced event (`user.offline`, `channel.vacated`,
 * `member.removed`) kept back until `hold`; `tag` is what the event that
 * cancels it looks like (see `cancelTagOf`).
 */
export interface QueueItem {
  readonly hold: number;
  readonly tag: string;
  /** The event's JSON text (legacy receivers: `<delivery id> <body>`). */
  readonly json: string;
}

/**
 * Tag of message events (`message.undelivered`, the offline webhook): never
 * held nor cancelled. Every item's JSON counts against
 * PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES, whatever its tag.
 */
export const MESSAGE_TAG = '#';

/** A key's due events, leased to this node until it acks or retries them. */
export interface Claim {
  readonly endpoint: string;
  /** The queue's key: a channel (users' own channels for `user.*`) or a message. */
  readonly key: string;
  readonly items: readonly QueueItem[];
  /** Failed attempts so far for the head of this queue. */
  readonly attempts: number;
  /** When the first of those attempts failed (ms), 0 if none did. */
  readonly firstFailure: number;
  readonly token: string;
}

export interface EndpointStats {
  /** Keys with events waiting (each key holds an ordered queue). */
  readonly depth: number;
  /** Keys whose head failed at least once and waits for its next attempt. */
  readonly retrying: number;
}

export interface WebhookStats {
  readonly endpoints: Readonly<Record<string, EndpointStats>>;
  /** Bytes of queued event JSON, every kind, per receiver (bounded by PUSHRELAY_WEBHOOK_MAX_QUEUE_BYTES). */
  readonly bytes: number;
  readonly deadLetters: number;
}

/** Events given up on, kept for an operator to retry or discard. */
export interface DeadLetter {
  readonly id: string;
  readonly endpoint: string;
  readonly key: string;
  /** When it was given up on (ms). */
  readonly ts: number;
  readonly attempts: number;
  readonly reason: string;
  readonly items: readonly QueueItem[];
}

/**
 * Per-key ordered queues of webhook events, one set per endpoint, shared by
 * the whole cluster: any node claims a due key (a lease), delivers its head
 * events and acks them; a node that dies leaves its lease to expire.
 * Presence events are written by the presence driver in the same step as
 * the transition (Redis) or through `enqueue` (memory).
 */
export interface WebhookQueue {
  /**
   * Queues one event for each endpoint under `key`. An event whose `match`
   * equals the tag of the held event at the tail of a queue cancels it
   * instead of being queued (debounce), giving its bytes back. The item's
   * JSON counts against the byte bound, once per receiver it is queued for:
   * over it the event is refused for all of them (answers false).
   * No item: only cancels (an event of a kind the receivers do not take).
   */
  enqueue(
    endpoints: readonly string[],
    key: string,
    item: QueueItem | undefined,
    match?: string,
  ): Promise<boolean>;
  /** Leases up to `keys` due keys of an endpoint, up to `batch` due events each. */
  claim(endpoint: string, now: number, keys: number, batch: number): Promise<Claim[]>;
  /** The claim's events arrived: removes them and frees the key. */
  ack(claim: Claim): Promise<void>;
  /** The attempt failed: the key waits until `at`. */
  retry(claim: Claim, at: number): Promise<void>;
  /** Moves the claim's events to the dead letters and frees the key. */
  bury(claim: Claim, reason: string): Promise<void>;
  stats(endpoints: readonly string[]): Promise<WebhookStats>;
  deadLetters(offset: number, limit: number): Promise<{ total: number; items: DeadLetter[] }>;
  /** Queues a dead letter's events again (at the tail of its key). False if there is no such dead letter. */
  retryDead(id: string): Promise<boolean>;
  discardDead(id: string): Promise<boolean>;
  /** Repairs what a crash can leave behind (see RedisWebhookQueue.sweep); answers what it repaired. */
  sweep?(endpoints: readonly string[]): Promise<number>;
}
