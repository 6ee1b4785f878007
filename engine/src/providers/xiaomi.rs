//! `xiaomi`: Xiaomi Mi Cloud (account.xiaomi.com), with 2FA by code or by a pasted authenticated URL.
