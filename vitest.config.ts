import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: the relay nodes and Redis servers the tests start need the rest.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
