"""The keyring: KEKs per dataset and classification, context-bound data keys, rotation, shredding."""

from __future__ import annotations

import base64
import multiprocessing
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from gbadz.config import CryptoSettings, Settings
from gbadz.crypto.keys import KeyContext, LocalKeyProvider, open_key_provider
from gbadz.errors import BadRequest, KeyDestroyed, KeyNotFound, KeyringUnavailable
from tests.crypto.conftest import PASSPHRASE

CTX = KeyContext("sz-hospital-visits", "3", "diagnosis", "spi")


class TestDataKeys:
    def test_one_key_per_context(self, provider: LocalKeyProvider) -> None:
        """The same context always gets the same data key; another column gets another key."""
        first = provider.data_key_id(CTX)
        assert first == provider.data_key_id(CTX)
        other = provider.data_key_id(KeyContext("sz-hospital-visits", "3", "patient_name", "pi"))
        assert first != other
        assert provider.data_key(first) != provider.data_key(other)
        assert 32 == len(provider.data_key(first))

    def test_keys_survive_a_new_process_view(self, provider: LocalKeyProvider) -> None:
        """A second provider on the same file (another process) sees the same keys."""
        dek_id = provider.data_key_id(CTX)
        again = LocalKeyProvider(provider.path, PASSPHRASE, scrypt_log2_n=10)
        assert (provider.data_key(dek_id), CTX) == (again.data_key(dek_id), again.context_of(dek_id))

    def test_kek_per_dataset_and_classification(self, provider: LocalKeyProvider) -> None:
        """KEKs are scoped to one dataset and one classification."""
        provider.data_key_id(CTX)
        provider.data_key_id(KeyContext("sz-hospital-visits", "3", "patient_name", "pi"))
        provider.data_key_id(KeyContext("hk-deliveries", "1", "phone", "pi"))
        assert ["hk-deliveries/pi", "sz-hospital-visits/pi", "sz-hospital-visits/spi"] == [
            k.kek_id for k in provider.list_keks()
        ]

    def test_unknown_classification(self) -> None:
        """A classification outside general/pi/spi/important is refused by name."""
        with pytest.raises(BadRequest, match="unknown classification 'secret'"):
            KeyContext("d", "1", "c", "secret")  # type: ignore[arg-type]

    def test_unknown_key(self, provider: LocalKeyProvider) -> None:
        """Asking for a data key that never existed is KeyNotFound."""
        with pytest.raises(KeyNotFound):
            provider.data_key("dek_000000000000000000000000")


class TestAtRest:
    def test_file_reveals_no_key_material_or_names(self, provider: LocalKeyProvider) -> None:
        """The keyring file holds no key bytes (raw, base64 or hex) and no dataset names."""
        dek = provider.data_key(provider.data_key_id(CTX))
        blob = provider.path.read_bytes()
        for needle in (dek, base64.b64encode(dek), dek.hex().encode(), b"sz-hospital-visits", b"diagnosis"):
            assert needle not in blob
        assert 0o600 == stat.S_IMODE(provider.path.stat().st_mode)

    def test_wrong_passphrase(self, provider: LocalKeyProvider) -> None:
        """A wrong passphrase is named as the likely cause, with the variable to set."""
        provider.data_key_id(CTX)
        wrong = LocalKeyProvider(provider.path, "not the passphrase", scrypt_log2_n=10)
        with pytest.raises(KeyringUnavailable, match="wrong passphrase \\(GBADZ_CRYPTO__PASSPHRASE\\)"):
            wrong.list_keks()

    def test_flipped_bit_in_file(self, provider: LocalKeyProvider) -> None:
        """Any altered byte of the keyring file makes it refuse to open."""
        provider.data_key_id(CTX)
        blob = bytearray(provider.path.read_bytes())
        blob[-5] ^= 0x01
        provider.path.write_bytes(bytes(blob))
        with pytest.raises(KeyringUnavailable, match="altered"):
            LocalKeyProvider(provider.path, PASSPHRASE, scrypt_log2_n=10).list_keks()

    def test_wrap_is_bound_to_its_context(self, provider: LocalKeyProvider) -> None:
        """Moving a wrapped data key to another context (column) makes it refuse to unwrap."""
        dek_id = provider.data_key_id(CTX)
        with provider._locked() as ring:
            ring["deks"][dek_id]["context"]["column"] = "city"
        with pytest.raises(KeyringUnavailable, match="record was altered"):
            provider.data_key(dek_id)


class TestRotation:
    def test_rotation_rewraps_without_changing_data_keys(self, provider: LocalKeyProvider) -> None:
        """Rotating a KEK keeps every data key (so all data stays readable) under a new version."""
        ids = [provider.data_key_id(KeyContext("ds", "1", f"c{i}", "pi")) for i in range(5)]
        before = {i: provider.data_key(i) for i in ids}
        with provider._locked() as ring:
            wrapped_before = {i: ring["deks"][i]["wrapped"] for i in ids}
        assert 2 == provider.rotate("ds/pi")
        assert before == {i: provider.data_key(i) for i in ids}
        with provider._locked() as ring:
            assert all(ring["deks"][i]["wrapped"] != wrapped_before[i] for i in ids)
            assert ["2"] == list(ring["keks"]["ds/pi"]["versions"])
        assert (2, (2,)) == (provider.list_keks()[0].primary_version, provider.list_keks()[0].versions)

    def test_rotating_unknown_kek(self, provider: LocalKeyProvider) -> None:
        """An unknown KEK id is named."""
        with pytest.raises(KeyNotFound, match="no key-encryption key nope/pi"):
            provider.rotate("nope/pi")


class TestCryptoShredding:
    def test_destroyed_dataset_cannot_be_decrypted(self, provider: LocalKeyProvider) -> None:
        """After destroying a dataset, none of its keys unwrap and no new ones are issued; others live on."""
        doomed = provider.data_key_id(CTX)
        survivor = provider.data_key_id(KeyContext("hk-deliveries", "1", "phone", "pi"))
        assert 2 == provider.destroy_dataset("sz-hospital-visits")  # one DEK, one KEK
        with pytest.raises(KeyDestroyed):
            provider.data_key(doomed)
        with pytest.raises(KeyDestroyed, match="crypto-shredded"):
            provider.data_key_id(KeyContext("sz-hospital-visits", "4", "diagnosis", "spi"))
        assert 32 == len(provider.data_key(survivor))
        with provider._locked() as ring:
            assert all(r["context"]["dataset"] != "sz-hospital-visits" for r in ring["deks"].values())


def _make_keys(path: str, worker: int) -> None:
    provider = LocalKeyProvider(Path(path), PASSPHRASE, scrypt_log2_n=10)
    for i in range(10):
        provider.data_key_id(KeyContext("shared", "1", f"w{worker}-c{i}", "pi"))


class TestConcurrency:
    def test_processes_never_lose_each_others_keys(self, provider: LocalKeyProvider) -> None:
        """Four processes adding keys to one keyring at once end with all 40 keys."""
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_make_keys, args=(str(provider.path), w)) for w in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [0, 0, 0, 0] == [p.exitcode for p in procs]
        assert 40 == provider.list_keks()[0].data_keys


class TestConfiguration:
    def test_prod_requires_a_passphrase(self, tmp_path: Path) -> None:
        """Outside dev there is no default passphrase."""
        with pytest.raises(KeyringUnavailable, match="GBADZ_CRYPTO__PASSPHRASE"):
            open_key_provider(tmp_path / "k.bin", None, env="prod")

    def test_dev_generates_a_private_passphrase(self, tmp_path: Path) -> None:
        """In dev a random passphrase is generated once, readable only by its owner."""
        open_key_provider(tmp_path / "k.bin", None, env="dev", dev_secret_dir=tmp_path)
        secret = tmp_path / "passphrase"
        assert 0o600 == stat.S_IMODE(secret.stat().st_mode)
        first = secret.read_text()
        open_key_provider(tmp_path / "k.bin", None, env="dev", dev_secret_dir=tmp_path)
        assert first == secret.read_text()

    def test_weak_passphrase_refused_in_prod(self) -> None:
        """A short passphrase is refused outside dev."""
        with pytest.raises(ValidationError, match="GBADZ_CRYPTO__PASSPHRASE"):
            Settings(env="prod", crypto=CryptoSettings(passphrase=SecretStr("short")))
