import { type LocalMembership, NO_COUNTERS, type NodeInfo, type Presence } from './types.js';

/** Standalone presence: this process is the whole cluster. */
export class MemoryPresence implements Presence {
  private readonly channels = new Map<string, Map<string, string>>();
  private readonly startedAt = Date.now();

  constructor(
    private readonly nodeId: string,
    private readonly local: LocalMembership,
  ) {}

  async join(channel: string, socketId: string, user: string): Promise<void> {
    let members = this.channels.get(channel);
    if (members === undefined) {
      members = new Map();
      this.channels.set(channel, members);
    }
    members.set(socketId, user);
  }

  async leave(channel: string, socketId: string): Promise<void> {
    const members = this.channels.get(channel);
    if (members?.delete(socketId) && members.size === 0) this.channels.delete(channel);
  }

  async count(channels: readonly string[]): Promise<number[]> {
    return channels.map((c) => this.channels.get(c)?.size ?? 0);
  }

  async members(channel: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const user of this.channels.get(channel)?.values() ?? []) out.set(user, (out.get(user) ?? 0) + 1);
    return out;
  }

  async nodes(): Promise<NodeInfo[]> {
    const { sockets, users } = this.local.stats();
    const counters = (await this.local.counters?.()) ?? NO_COUNTERS;
    return [
      { id: this.nodeId, sockets, users, startedAt: this.startedAt, lastSeen: Date.now(), ...counters },
    ];
  }

  async close(): Promise<void> {}
}
