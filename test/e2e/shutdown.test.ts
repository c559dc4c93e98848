import { afterEach, describe, expect, it } from 'vitest';
import { connectClient } from '../helpers/clients.js';
import { token } from '../helpers/env.js';
import { post } from '../helpers/http.js';
import { type RelayNode, startProcess } from '../helpers/nodes.js';

// A drain spreads sockets' reconnects over PUSHRELAY_DRAIN_SECONDS; a node
// with nothing left to spread must not make a deploy wait the whole period.

const DRAIN_SECONDS = 60;

describe('SIGTERM', () => {
  let node: RelayNode | undefined;
  afterEach(async () => {
    await node?.stop();
    node = undefined;
  });

  it('exits 0 long before the drain period when the node has no sockets, after serving HTTP', async () => {
    node = await startProcess({ PUSHRELAY_DRAIN_SECONDS: String(DRAIN_SECONDS), LOG_LEVEL: 'info' });
    const sentAt = Date.now();
    const exited = node.kill('SIGTERM');
    // Publishers still routed here during the drain are served, not refused.
    const res = await post(`${node.url}/v1/publish`, { event: 'late', broadcast: true });
    expect(res.status).toBe(200);
    expect((await fetch(`${node.url}/readyz`)).status).toBe(503);
    expect(await exited).toBe(0);
    // The old node waited all 60 s; a third of that is a bound no loaded machine reaches.
    expect(Date.now() - sentAt).toBeLessThan((DRAIN_SECONDS * 1000) / 3);
    expect(node.output.join('\n')).toContain('"msg":"drained"');
  }, 40_000);

  it('exits once its sockets were told to move on and left', async () => {
    node = await startProcess({ PUSHRELAY_DRAIN_SECONDS: String(DRAIN_SECONDS) });
    const client = await connectClient(node.url, await token('leaving'));
    const sentAt = Date.now();
    const exited = node.kill('SIGTERM');
    const [notice] = await client.waitForEvent('pushrelay:disconnect');
    expect(notice!.data).toMatchObject({ reason: 'draining', reconnect: true });
    expect(await exited).toBe(0);
    expect(Date.now() - sentAt).toBeLessThan((DRAIN_SECONDS * 1000) / 3);
    client.close();
  }, 40_000);
});
