// A self-signed certificate and key for tests only (CN=localhost, P-256,
// valid until 2126): never used outside tests.
#pragma once

namespace coppice::tls::testing {

inline constexpr const char* kTestCert = R"(-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUMGj/SpyvUJyUyHM2AxB+mT8dfDEwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNjE4MzUyNVoYDzIxMjYxMTEy
MTgzNTI1WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATvoHyASTellqaEmWr2W3yqxrq8KYNLKWnj0MqV4t/Lx3G4HbmRYh6H
iltVJZ5sTSvMIaGjrnfV4o//R3Yeve+bo2kwZzAdBgNVHQ4EFgQU/fyildrC0Vvm
Ku8laibiClxyZ4AwHwYDVR0jBBgwFoAU/fyildrC0VvmKu8laibiClxyZ4AwDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
SAAwRQIgXlHtoBn+O3zlcRKf2bioI2SVkdD0o5uRumxR10W6hi0CIQC20EYh4GF8
qP2htmegyNTIx4iPVW91temevqBpL15MCg==
-----END CERTIFICATE-----)";

inline constexpr const char* kTestKey = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg/wtWqSHpoAinW4hZ
OKCBKVT7aDCliwIE0RBicdrv7tuhRANCAATvoHyASTellqaEmWr2W3yqxrq8KYNL
KWnj0MqV4t/Lx3G4HbmRYh6HiltVJZ5sTSvMIaGjrnfV4o//R3Yeve+b
-----END PRIVATE KEY-----)";

}  // namespace coppice::tls::testing
