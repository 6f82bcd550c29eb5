Feature: Cases travel to the GPU host over SSH
  caseflow reaches the GPU host over SSH. The host's key is checked against the
  known hosts file before anything is sent. One connection is kept open for all
  the work. Each case is uploaded into a staging folder that is renamed into
  place only once it is complete and verified, so the job never sees half a
  case. Dropped connections and outages delay cases; they never fail them.

  Background:
    Given the GPU host is reached over SSH

  Scenario: A case is uploaded and run over SSH
    Given caseflow is running
    When the case folder "lung_0001" is dropped into the inbox
    Then the case "lung_0001" ends in success
    And the job of "lung_0001" ran in its folder on the GPU host
    And caseflow opened one SSH connection for all of it

  Scenario: A host whose key is not known is refused, and nothing is sent to it
    Given the GPU host's key is not in the known hosts file
    And caseflow is running
    When the case folder "lung_0002" is dropped into the inbox
    Then caseflow shows the host as paused because its key is not known
    And nothing has been written on the GPU host
    And the case "lung_0002" is waiting, not failed

  Scenario: A connection dropped during an upload is retried and the case succeeds
    Given the network to the GPU host is slow
    And caseflow is running
    When the case folder "lung_0003" of 6 MB is dropped into the inbox
    And the connection drops while "lung_0003" is being uploaded
    Then the case "lung_0003" still ends in success
    And only the finished folder of "lung_0003" is on the GPU host

  Scenario: An outage longer than the quick retries fails no case
    Given caseflow is running
    And the case "lung_0004" for gpu_a is running and waits to be released
    When the SSH server goes down
    And the case folder "lung_0005" is dropped into the inbox
    And caseflow has tried to reach the host and failed
    And the job of "lung_0004" is released
    And the SSH server comes back
    Then the case "lung_0004" still ends in success
    And the case "lung_0005" still ends in success

  Scenario: More work at once than the host allows sessions delays no case
    A server limits the commands running at once on one connection (OpenSSH's
    MaxSessions, 10 by default). caseflow keeps to transport.max_sessions; where
    the host allows fewer, a step waits for a session on the same connection.
    Given the GPU host allows 3 sessions on one connection
    And caseflow works on 8 steps at a time with 12 slots
    And caseflow is running
    When 12 case folders are dropped into the inbox at once
    Then every one of them ends in success
    And caseflow opened one SSH connection for all of it

  Scenario: Case names with spaces, quotes and shell syntax run safely
    Given caseflow is running
    When these case folders are dropped into the inbox:
      | name              |
      | scan with spaces  |
      | it's "quoted"     |
      | $(touch CANARY)   |
      | `touch CANARY`    |
      | a;b\|c&d          |
      | -starts-with-dash |
      | ünïcödé ✓         |
    Then every one of them ends in success
    And no file named CANARY appeared anywhere
