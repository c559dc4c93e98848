import { createHmac, randomBytes } from 'node:crypto';
import type { Publication } from '../ingest/message.js';
import type { PresenceEvent } from '../presence/types.js';
import { MESSAGE_TAG, type QueueItem, WEBHOOK_EVENT_TYPES, type WebhookEventType } from './types.js';

/** The signature the receiving app checks: hex HMAC-SHA256(secret, "<timestamp>.<body>"). */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex');
}

/** Event ids: unique per process start and counter, so repeats of one event keep its id. */
export class EventIds {
  private readonly base = randomBytes(6).toString('hex');
  private n = 0;
  next(): string {
    return `${this.base}${(++this.n).toString(36)}`;
  }
}

/**
 * Debounce: the event that a later one cancels, as `<tag>`; the later one
 * carries the same text as its `match`. Keys are per user (users' own
 * channels) and per channel, so the type (and the member) is enough.
 */
export function holdTagOf(type: WebhookEventType, user: string | undefined): string | undefined {
  switch (type) {
    case 'user.offline':
      return 'user.online';
    case 'channel.vacated':
      return 'channel.occupied';
    case 'member.removed':
      return `member.added:${user}`;
    default:
      return undefined;
  }
}

export function matchOf(type: WebhookEventType, user: string | undefined): string | undefined {
  switch (type) {
    case 'user.online':
      return 'user.online';
    case 'channel.occupied':
      return 'channel.occupied';
    case 'member.added':
      return `member.added:${user}`;
    default:
      return undefined;
  }
}

/** The queue key of a presence event: the channel it happened in (users' own channel for `user.*`). */
export function keyOf(event: PresenceEvent): string {
  return 'channel' in event ? event.channel : `user:${event.user}`;
}

/** A presence event as receivers get it (the same JSON the Redis driver's script writes). */
export function presenceItem(
  event: PresenceEvent,
  id: string,
  debounceMs: number,
): { item: QueueItem; match: string | undefined } {
  const user = 'user' in event ? event.user : undefined;
  let json = `{"id":${JSON.stringify(id)},"type":"${event.type}","ts":${event.ts},"node":${JSON.stringify(event.node)}`;
  if (user !== undefined) json += `,"user":${JSON.stringify(user)}`;
  if ('channel' in event) json += `,"channel":${JSON.stringify(event.channel)}`;
  const info = 'info' in event ? event.info : undefined;
  if (info !== undefined && isJson(info)) json += `,"user_info":${info}`;
  json += '}';
  const tag = holdTagOf(event.type, user);
  return {
    item: { hold: tag !== undefined && debounceMs > 0 ? event.ts + debounceMs : 0, tag: tag ?? '', json },
    match: matchOf(event.type, user),
  };
}

/** `message.undelivered` for PUSHRELAY_WEBHOOKS receivers: the offline users and the message (its data spliced in as it is). */
export function undeliveredItem(
  id: string,
  node: string,
  users: readonly string[],
  p: Publication,
  ts: number,
): QueueItem {
  const json = `{"id":${JSON.stringify(id)},"type":"message.undelivered","ts":${ts},"node":${JSON.stringify(node)},"users":${JSON.stringify(users)},"message":${messageJson(p)}}`;
  return { hold: 0, tag: MESSAGE_TAG, json };
}

/** The offline webhook's body of old, byte for byte, after its delivery id. */
export function legacyItem(id: string, node: string, users: readonly string[], p: Publication): QueueItem {
  const body = `{"type":"offline","users":${JSON.stringify(users)},"message":${messageJson(p)},"node":${JSON.stringify(node)}}`;
  return { hold: 0, tag: MESSAGE_TAG, json: `${id} ${body}` };
}

// data is already JSON text: spliced in, not parsed and encoded again.
function messageJson(p: Publication): string {
  return `{"id":${JSON.stringify(p.id)},"event":${JSON.stringify(p.event)},"ts":${p.ts},"data":${p.data}}`;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/** Milliseconds since the epoch an event's JSON was produced at (its first `"ts"`), for the latency histogram. */
export function tsOf(json: string): number | undefined {
  const m = /"ts":(\d+)/.exec(json);
  return m ? Number(m[1]) : undefined;
}

const METRIC_TYPES = new Set<string>([...WEBHOOK_EVENT_TYPES, 'offline']);

/**
 * An event's type as a metric label: its JSON's first `"type"` (ours come
 * before any user text; the offline webhook's body says `offline`), `other`
 * for anything else so the label stays a handful of values.
 */
export function typeOf(json: string): string {
  const m = /"type":"([a-z.]+)"/.exec(json);
  return m && METRIC_TYPES.has(m[1]!) ? m[1]! : 'other';
}
