Feature: A case's life, from the inbox to its outcome
  An operator drops a case folder into the inbox. caseflow sends it to the GPU
  host, runs its job there and records how the job ended. A case that failed
  can be retried, and a case that runs can be cancelled.

  Background:
    Given caseflow is running

  Scenario: A case runs to success
    When the case folder "liver_0001" is dropped into the inbox
    Then the case "liver_0001" ends in success
    And the history of "liver_0001" shows detected, stable, queued, gpu_locked, uploaded, running and success
    And the case "liver_0001" shows no reason
    And the result of "liver_0001" is in its folder on the GPU host
    And no GPU slot is held

  Scenario: An operator sees where a case's time to result went
    When the case folder "liver_0007" is dropped into the inbox
    Then the case "liver_0007" ends in success
    And caseflow shows how long "liver_0007" spent in quiet, slot wait, upload, queue wait, run and results, together its total
    And the start and end of the job of "liver_0007" are those the GPU host noted

  Scenario: A job that fails ends the case in failure, with its exit code as the reason
    When the case folder "liver_0002" whose job exits with code 3 is dropped into the inbox
    Then the case "liver_0002" ends in failure
    And the reason given for "liver_0002" is "job exited with code 3"
    And no GPU slot is held

  Scenario: An operator retries a failed case after fixing it
    Given the case folder "liver_0003" whose job exits with code 3 was dropped into the inbox
    And the case "liver_0003" has ended in failure
    When the operator deletes the file "exit_code" from the inbox folder "liver_0003"
    And the operator retries "liver_0003"
    Then the case "liver_0003" ends in success
    And the case "liver_0003" shows no reason
    And the case "liver_0003" is on its second run
    And the result of "liver_0003" is in its folder on the GPU host

  Scenario: An operator cancels a running case
    Given the case folder "liver_0004" whose job waits to be released was dropped into the inbox
    And the job of "liver_0004" is running
    When the operator cancels "liver_0004"
    Then the job of "liver_0004" is no longer running
    And the case "liver_0004" ends in failure
    And the reason given for "liver_0004" is "cancelled"
    And no GPU slot is held

  Scenario: A retry runs the case's inputs as they are now and keeps the earlier run's results
    Given the case folder "liver_0005" whose job exits with code 3 was dropped into the inbox
    And the case "liver_0005" has ended in failure
    When the operator writes "0" into the file "exit_code" of the inbox folder "liver_0005"
    And the operator retries "liver_0005"
    Then the case "liver_0005" ends in success
    And the case "liver_0005" is on its second run
    And the results of both runs of "liver_0005" are kept

  Scenario: A cancelled job that takes its time to stop keeps its GPU slot until it has stopped
    Given the case "liver_0006" for gpu_b is running and its job takes 2 seconds to stop
    And the case "liver_0007" for gpu_b waits in the queue
    When the operator cancels "liver_0006" without waiting
    Then the case "liver_0006" is stopping its job and holds its GPU slot
    And the case "liver_0006" ends in failure
    And the reason given for "liver_0006" is "cancelled"
    And the job of "liver_0007" started only after the job of "liver_0006" had stopped

  Scenario: An operator follows a running job's output until its case ends
    Given the case folder "liver_0008" whose job waits to be released was dropped into the inbox
    And the job of "liver_0008" is running
    When the operator follows the log of "liver_0008"
    Then the operator sees "job of case" in the log of "liver_0008" while its job runs
    When the job of "liver_0008" is released
    Then the case "liver_0008" ends in success
    And following the log of "liver_0008" ends by itself, saying it ended in success
