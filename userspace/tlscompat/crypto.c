// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libagentgate-crypto.so: what CivetWeb 1.15 finds when it opens
 * "libcrypto.so" (see ssl.c). Its SONAME is "libcrypto.so" and it depends
 * on libcrypto.so.3, where every function CivetWeb looks up is found; it
 * defines nothing of its own but the marker below.
 */
const char agentgate_crypto_compat[] = "libcrypto.so -> libcrypto.so.3";
