"""The lab's shareblock.conf: one LIO and one nvmet backend on loopback, file pools."""
from pathlib import Path

LAB_CONF = """[DEFAULT]
enabled_backends = lio, nvme
state_path = {d}/state

[roles]
users = root:admin

[lio]
volume_backend_name = lab-iscsi
target_protocol = iscsi
target_ip_address = 127.0.0.1
shareblock_pool = file:{d}/lio-volumes
{extra}
[nvme]
volume_backend_name = lab-nvme
target_protocol = nvmet_tcp
target_ip_address = 127.0.0.1
target_port = 4420
shareblock_pool = file:{d}/nvme-volumes
{extra}"""


def write(folder: str | Path, **backend_options) -> Path:
    """backend_options: more settings for both backends (the benchmark's large pools)."""
    path = Path(folder) / "shareblock.conf"
    extra = "".join(f"{k} = {v}\n" for k, v in backend_options.items())
    path.write_text(LAB_CONF.format(d=folder, extra=extra))
    return path
