Feature: A login node that asks for a one-time code
  Many HPC centres ask for a one-time code at every SSH login. With the openssh
  transport, the operator logs in once with "caseflow login", answering the
  questions in the terminal; caseflow then sends every command and every upload
  through that one connection and never asks again. When the connection goes
  away (it expired, the login node rebooted), caseflow pauses the host, says
  that someone must log in, and tells the operator with a command of their
  choice; no case fails. After the next login the waiting cases go on by
  themselves.

  Background:
    Given the GPU host's login node asks for a key and a one-time code
    And caseflow reaches it with the openssh transport
    And caseflow runs "notify-operator" when work on a host pauses

  Scenario: One login carries every case
    Given the operator has logged in with "caseflow login"
    And caseflow is running
    When 10 case folders are dropped into the inbox
    Then every one of them ends in success
    And the login node saw one login and one connection

  Scenario: When the connection goes away, the host waits for the next login
    Given the operator has logged in with "caseflow login"
    And caseflow is running
    And the case "lung_0001" for gpu_a is running and waits to be released
    When the login connection goes away
    And the case folder "lung_0002" is dropped into the inbox
    And the job of "lung_0001" is released
    Then caseflow shows the host as paused until someone runs "caseflow login testhost"
    And "notify-operator" was run once, naming the host
    And the case "lung_0002" is waiting, not failed
    When the operator logs in again with "caseflow login"
    Then the case "lung_0001" ends in success
    And the case "lung_0002" ends in success

  Scenario: A changed host key stops the login before anything is asked or sent
    Given the login node's host key has changed
    When the operator runs "caseflow login"
    Then caseflow login fails with OpenSSH's warning that the host key has changed
    And no one-time code was asked
    And nothing has been written on the GPU host

  Scenario: caseflow check says whether someone is logged in
    When the operator runs "caseflow check"
    Then it says to log in with "caseflow login testhost"
    When the operator has logged in with "caseflow login"
    And the operator runs "caseflow check"
    Then it says the login connection is up and every check passes
