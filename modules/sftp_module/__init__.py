"""The ``sftp`` source module: files of an SSH server, over SFTP (paramiko)."""
