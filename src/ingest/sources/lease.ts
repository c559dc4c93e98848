import type { Redis } from '../../redis/client.js';

/** A lease lasts this long in Redis without renewal... */
export const LEASE_TTL_MS = 5000;
/** ...and its holder trusts it for this much less, so two holders never overlap on clock drift or a slow reply. */
const SAFETY_MS = 1500;

// KEYS: lease, generation counter (one hash tag). ARGV: node, ttl ms, mode, generation.
// 'acquire' takes a free lease with a new generation (the fencing token);
// 'renew' and 'release' act only on the holder's own generation.
// Returns { 1 | 0, generation or current holder }.
const LEASE_LUA = `
local held = redis.call('get', KEYS[1])
if ARGV[3] == 'acquire' then
  if held then return { 0, held } end
  local g = redis.call('incr', KEYS[2])
  redis.call('set', KEYS[1], ARGV[1] .. '/' .. g, 'PX', ARGV[2])
  return { 1, tostring(g) }
end
if held ~= ARGV[1] .. '/' .. ARGV[4] then return { 0, held or '' } end
if ARGV[3] == 'renew' then redis.call('pexpire', KEYS[1], ARGV[2]) else redis.call('del', KEYS[1]) end
return { 1, ARGV[4] }
`;

interface LeaseCommand {
  relayIngestLease(
    lease: string,
    generation: string,
    node: string,
    ttl: number,
    mode: 'acquire' | 'renew' | 'release',
    gen: string,
  ): Promise<[number, string]>;
}

export function defineLease(cmd: Redis): void {
  cmd.defineCommand('relayIngestLease', { numberOfKeys: 2, lua: LEASE_LUA });
}

/** The holder of a lease value `<node>/<generation>`. */
export function leaseHolder(value: string | null): string | undefined {
  if (!value) return undefined;
  const slash = value.lastIndexOf('/');
  return slash === -1 ? value : value.slice(0, slash);
}

/**
 * One node at a time may do a piece of stream work (route a stream, own a
 * partition). The holder acts only while `held`, which ends SAFETY_MS before
 * the lease can expire in Redis, so a successor (who must wait for expiry)
 * never overlaps with it.
 */
export class Lease {
  /** The fencing generation of this holding; 0 when not held. */
  generation = '0';
  private validUntil = 0;
  private readonly cmd: Redis & LeaseCommand;

  constructor(
    cmd: Redis,
    private readonly keys: { readonly lease: string; readonly generation: string },
    private readonly nodeId: string,
  ) {
    this.cmd = cmd as Redis & LeaseCommand;
  }

  get held(): boolean {
    return Date.now() < this.validUntil;
  }

  /** Takes the lease if it is free; answers the generation taken (1 for the first holder ever). */
  async acquire(): Promise<number | undefined> {
    const asked = Date.now();
    const [ok, value] = await this.call('acquire', '0');
    if (ok !== 1) return undefined;
    this.generation = value;
    this.validUntil = asked + LEASE_TTL_MS - SAFETY_MS;
    return Number(value);
  }

  async renew(): Promise<boolean> {
    if (this.generation === '0') return false;
    const asked = Date.now();
    try {
      const [ok] = await this.call('renew', this.generation);
      if (ok === 1) {
        this.validUntil = asked + LEASE_TTL_MS - SAFETY_MS;
        return true;
      }
      this.validUntil = 0;
      this.generation = '0';
      return false;
    } catch {
      // Redis away: the lease runs out by itself; held turns false in time.
      return this.held;
    }
  }

  async release(): Promise<void> {
    const gen = this.generation;
    this.validUntil = 0;
    this.generation = '0';
    if (gen !== '0') await this.call('release', gen).catch(() => {});
  }

  private call(mode: 'acquire' | 'renew' | 'release', gen: string): Promise<[number, string]> {
    return this.cmd.relayIngestLease(
      this.keys.lease,
      this.keys.generation,
      this.nodeId,
      LEASE_TTL_MS,
      mode,
      gen,
    );
  }
}
