import type { Logger } from 'pino';
import { isRelayError } from '../errors.js';
import type { Metrics } from '../metrics/index.js';
import type { Redis } from '../redis/client.js';
import type { RedisNames } from '../redis/keys.js';
import type { Ingest } from './ingest.js';
import { parseJsonText } from './json.js';
import { parsePublishBody } from './schema.js';

// Renews the lease if this node holds it, takes it if nobody does.
const LEASE_LUA = `
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`;

const LEASE_MS = 10_000;
const RENEW_MS = 3_000;
/** A lease is trusted for this much less than its length, so two nodes never both act on one message. */
const SAFETY_MS = 3_000;

interface LeaseCommands {
  relayLease(key: string, node: string, ms: number): Promise<number>;
}

/**
 * Apps may PUBLISH a publish body straight onto `<prefix>:publish`. Only the
 * node holding the ingest lease subscribes (so the other nodes are not sent
 * every raw message only to drop it), and it runs each message through the
 * same path as an HTTP publish (validation, history, idempotency, fan-out to
 * the nodes with sockets in the targets). Malformed messages are logged and
 * counted, never thrown. Pub/sub is at-most-once: a message published while
 * no node holds the lease (up to one lease after the holder dies) is not seen
 * by anyone.
 */
export class RedisIngest {
  private leadingUntil = 0;
  private subscribed = false;
  private stopped = false;
  private readonly timer: NodeJS.Timeout;
  private readonly cmd: Redis & LeaseCommands;

  constructor(
    cmd: Redis,
    private readonly sub: Redis,
    private readonly names: RedisNames,
    private readonly nodeId: string,
    private readonly ingest: Ingest,
    private readonly metrics: Metrics,
    private readonly log: Logger,
    private readonly maxPayloadBytes: number,
    private readonly maxJsonDepth: number,
  ) {
    cmd.defineCommand('relayLease', { numberOfKeys: 1, lua: LEASE_LUA });
    this.cmd = cmd as Redis & LeaseCommands;
    sub.on('message', (channel: string, payload: string) => {
      if (channel === names.ingest) this.receive(payload);
    });
    this.timer = setInterval(() => void this.renew(), RENEW_MS);
    this.timer.unref();
    cmd.on('ready', () => void this.renew());
  }

  async start(): Promise<void> {
    await this.renew();
  }

  get leading(): boolean {
    return Date.now() < this.leadingUntil;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.leading) {
      this.leadingUntil = 0;
      // Hand the lease over now rather than after it expires.
      await this.cmd
        .eval(
          "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
          1,
          this.names.ingestLeader,
          this.nodeId,
        )
        .catch(() => {});
    }
  }

  private async renew(): Promise<void> {
    const asked = Date.now();
    try {
      const held = await this.cmd.relayLease(this.names.ingestLeader, this.nodeId, LEASE_MS);
      this.leadingUntil = held === 1 ? asked + LEASE_MS - SAFETY_MS : 0;
    } catch {
      // Redis away: the lease runs out by itself.
    }
    await this.follow();
  }

  /** Subscribes while this node leads, unsubscribes once it no longer does. */
  private async follow(): Promise<void> {
    const want = this.leading && !this.stopped;
    if (want === this.subscribed) return;
    this.subscribed = want;
    // Both are queued while Redis is away; ioredis resubscribes what is subscribed on reconnect.
    // A refused SUBSCRIBE is tried again at the next renewal (a second one is harmless).
    if (want) await this.sub.subscribe(this.names.ingest).catch(() => (this.subscribed = false));
    else await this.sub.unsubscribe(this.names.ingest).catch(() => {});
  }

  private receive(payload: string): void {
    if (!this.leading) return;
    let body: ReturnType<typeof parsePublishBody>;
    try {
      if (Buffer.byteLength(payload) > this.maxPayloadBytes) {
        this.refuse('payload_too_large', payload);
        return;
      }
      body = parsePublishBody(parseJsonText(payload, this.maxJsonDepth));
    } catch (err) {
      this.refuse(isRelayError(err) ? err.code : 'invalid_json', payload, err);
      return;
    }
    this.ingest.publish(body, 'redis').catch((err: unknown) => {
      if (isRelayError(err) && err.code !== 'unavailable') this.refuse(err.code, payload, err);
      else this.log.error({ err }, 'could not publish a message from the Redis ingest channel');
    });
  }

  private refuse(code: string, payload: string, err?: unknown): void {
    this.metrics.ingestMalformed.inc({ code });
    this.log.warn(
      { code, reason: err instanceof Error ? err.message : undefined, sample: payload.slice(0, 200) },
      'refused a message on the Redis ingest channel',
    );
  }
}
