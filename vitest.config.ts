import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Property suites run many graphs; MINISEQ_PROPERTY_SCALE raises their run counts.
    testTimeout: 120_000,
  },
})
