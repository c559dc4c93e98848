import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, connectError } from '../helpers/clients.js';
import { startInProcess } from '../helpers/nodes.js';
import { sleep } from '../helpers/wait.js';

const sign = (key: KeyObject, alg: string, kid?: string, user = 'alice') =>
  new SignJWT({})
    .setProtectedHeader({ alg, ...(kid ? { kid } : {}) })
    .setSubject(user)
    .setExpirationTime('10m')
    .sign(key);

describe('client token keys', () => {
  it('verifies ES256 tokens with a P-256 public key, and nothing signed otherwise', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const node = await startInProcess({
      PUSHRELAY_JWT_SECRET: undefined,
      PUSHRELAY_JWT_PUBLIC_KEY: ec.publicKey
        .export({ type: 'spki', format: 'pem' })
        .toString()
        .replace(/\n/g, '\\n'),
    });
    try {
      const ok = await connectClient(node.url, await sign(ec.privateKey, 'ES256'));
      expect(ok.connected.user).toBe('alice');
      ok.close();
      const wrongKey = await connectError(node.url, {
        token: await sign(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, 'ES256'),
      });
      expect(wrongKey.data?.code).toBe('token_invalid');
      const rs = await connectError(node.url, { token: await sign(rsa.privateKey, 'RS256') });
      expect(rs.message).toBe('the token is not valid: its algorithm is not allowed');
    } finally {
      await node.stop();
    }
  });

  describe('a JWKS URL', () => {
    const first = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const second = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    let keys: object[] = [];
    let up = true;
    let fetches = 0;
    let jwks: Server;
    let node: Awaited<ReturnType<typeof startInProcess>>;
    beforeAll(async () => {
      keys = [{ ...(await exportJWK(first.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }];
      jwks = createServer((_req, res) => {
        fetches++;
        if (!up) return res.writeHead(503).end();
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
      });
      await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
      node = await startInProcess({
        PUSHRELAY_JWT_SECRET: undefined,
        PUSHRELAY_JWKS_URL: `http://127.0.0.1:${(jwks.address() as { port: number }).port}/.well-known/jwks.json`,
      });
    });
    afterAll(async () => {
      await node.stop();
      jwks.close();
    });

    it('verifies tokens with the published keys, fetching them once', async () => {
      for (let i = 0; i < 3; i++) {
        const c = await connectClient(node.url, await sign(first.privateKey, 'RS256', 'k1'));
        c.close();
      }
      expect(fetches).toBe(1);
    });

    it('follows a key rotation: a token with a new kid refetches the set', async () => {
      keys = [...keys, { ...(await exportJWK(second.publicKey)), kid: 'k2', alg: 'ES256', use: 'sig' }];
      await sleep(5100); // the cooldown between refetches
      const c = await connectClient(node.url, await sign(second.privateKey, 'ES256', 'k2'));
      expect(c.connected.user).toBe('alice');
      c.close();
      expect(fetches).toBe(2);
      const unknown = await connectError(node.url, { token: await sign(second.privateKey, 'ES256', 'k9') });
      expect(unknown.data?.code).toBe('token_invalid');
    });

    it('says the keys are unavailable, not that the token is bad, when the JWKS cannot be fetched', async () => {
      up = false;
      await sleep(5100);
      const err = await connectError(node.url, { token: await sign(second.privateKey, 'ES256', 'k3') });
      expect(err.data?.code).toBe('unavailable');
      up = true;
    });
  });
});
